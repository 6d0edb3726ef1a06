//! DingTalk Stream mode end to end: the real client
//! (`platform::dingtalk::stream`) against the sandbox gateway over a real
//! WebSocket on loopback. Every wait is for a condition, bounded by
//! [`PATIENCE`]; nothing depends on how fast the machine is. Durations are
//! only checked from below, where the client's backoff guarantees them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollcall::platform::dingtalk::stream::{
    Backoff, FrameHandler, FrameType, HandlerError, StreamClient, StreamConfig, StreamError,
    StreamFrame, StreamStatus, Subscription, TOPIC_BOT_MESSAGE, TOPIC_CARD_CALLBACK,
    default_subscriptions,
};
use rollcall::platform::sandbox::SandboxStreamGateway;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;

/// The bound of every wait: far beyond what anything takes on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);
const CLIENT_ID: &str = "dingsandboxclientid";
const CLIENT_SECRET: &str = "sandbox-secret-0123456789";
/// Short backoff so that reconnection tests finish quickly.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(200),
    max: Duration::from_secs(2),
};

/// A handler that records every frame it is given (failed attempts too), can
/// be made to fail, and can be held at its start by a gate.
struct Recorder {
    frames: Mutex<Vec<StreamFrame>>,
    changed: watch::Sender<u64>,
    fail: AtomicBool,
    /// When set, each call waits for a permit before it returns.
    gate: Option<Arc<Semaphore>>,
    /// What card callbacks get back (other frames get `None`).
    response: Option<Value>,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            frames: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
            fail: AtomicBool::new(false),
            gate: None,
            response: None,
        })
    }

    fn gated(gate: Arc<Semaphore>) -> Arc<Recorder> {
        Arc::new(Recorder {
            gate: Some(gate),
            ..Arc::into_inner(Recorder::new()).unwrap()
        })
    }

    fn frames(&self) -> Vec<StreamFrame> {
        self.frames.lock().unwrap().clone()
    }

    /// How many times the frame `id` reached the handler.
    fn calls(&self, id: &str) -> usize {
        self.frames()
            .iter()
            .filter(|f| f.message_id() == Some(id))
            .count()
    }

    /// Waits until `f` holds for the recorded frames.
    async fn wait(&self, what: &str, f: impl Fn(&[StreamFrame]) -> bool) {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if f(&self.frames()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "handler: {what} not within {PATIENCE:?}; got {:?}",
                    self.frames()
                );
            }
        }
    }
}

#[async_trait::async_trait]
impl FrameHandler for Recorder {
    async fn handle(&self, frame: &StreamFrame) -> Result<Option<Value>, HandlerError> {
        self.frames.lock().unwrap().push(frame.clone());
        self.changed.send_modify(|n| *n += 1);
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate").forget();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(HandlerError::new("database unavailable"));
        }
        if frame.topic() == Some(TOPIC_CARD_CALLBACK) {
            Ok(self.response.clone())
        } else {
            Ok(None)
        }
    }
}

fn config(gw: &SandboxStreamGateway) -> StreamConfig {
    let mut c = StreamConfig::new(&gw.api_base(), CLIENT_ID, CLIENT_SECRET);
    c.local_ip = Some("127.0.0.1".into());
    c.reconnect = BACKOFF;
    c
}

/// A client running on its own task.
struct Running {
    status: watch::Receiver<StreamStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), StreamError>>,
}

fn spawn(config: StreamConfig, handler: Arc<dyn FrameHandler>) -> Running {
    let client = StreamClient::new(config, handler).expect("client");
    let status = client.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(client.run(async move {
        let _ = stopped.await;
    }));
    Running {
        status,
        stop: Some(stop),
        task,
    }
}

impl Running {
    /// Waits until the client's status satisfies `f`.
    async fn wait_status(&mut self, what: &str, f: impl Fn(&StreamStatus) -> bool) -> StreamStatus {
        let found = match tokio::time::timeout(PATIENCE, self.status.wait_for(|s| f(s))).await {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        };
        found.unwrap_or_else(|| {
            panic!(
                "client: {what} not within {PATIENCE:?}; status {:?}",
                self.status.borrow()
            )
        })
    }

    /// Asks the client to stop and waits for it to return.
    async fn stop(mut self) -> Result<(), StreamError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the client stops on shutdown")
            .expect("the client task does not panic")
    }
}

/// Every answer the gateway got had the right envelope, on the right
/// connection.
fn assert_acks_valid(gw: &SandboxStreamGateway) {
    let invalid = gw.invalid_acks();
    assert!(invalid.is_empty(), "invalid answers: {invalid:?}");
}

fn ack_data(ack: &Value) -> Value {
    serde_json::from_str(ack["data"].as_str().expect("data is a string")).expect("data is JSON")
}

#[tokio::test]
async fn frames_reach_the_handler_verbatim_and_are_acknowledged() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    // Pushed before the client connects: queued, then delivered on connect.
    let event = gw.push_event(
        "user_add_org",
        r#"{"timeStamp":"1685501863357","userId":["015xxxx227"]}"#,
    );
    let handler = Arc::new(Recorder {
        response: Some(json!({"cardData": {"cardParamMap": {"answer": "已到岗"}}})),
        ..Arc::into_inner(Recorder::new()).unwrap()
    });
    let mut client = spawn(config(&gw), handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let message = gw.push_callback(
        TOPIC_BOT_MESSAGE,
        r#"{"msgId":"msg1","text":{"content":"打卡"},"senderStaffId":"zhangsan"}"#,
    );
    let card = gw.push_callback(
        TOPIC_CARD_CALLBACK,
        r#"{"outTrackId":"t1","content":"{\"cardPrivateData\":{}}","type":"actionCallback"}"#,
    );

    handler.wait("three frames", |f| f.len() >= 3).await;
    let frames = handler.frames();
    let by_id: HashMap<&str, &StreamFrame> = frames
        .iter()
        .map(|f| (f.message_id().unwrap(), f))
        .collect();
    let sent: HashMap<String, String> = gw.sent_frames().into_iter().collect();

    let e = by_id[event.as_str()];
    assert_eq!(e.frame_type, FrameType::Event);
    assert_eq!(
        e.raw, sent[&event],
        "the raw text is exactly what the gateway sent"
    );
    assert_eq!(e.headers.event_type.as_deref(), Some("user_add_org"));
    assert_eq!(e.headers.event_corp_id, Some(gw.corp_id()));
    assert!(e.headers.event_id.is_some() && e.headers.event_born_time_ms().is_some());
    assert!(e.headers.connection_id.is_some());
    assert_eq!(e.data_json().unwrap()["userId"], json!(["015xxxx227"]));

    let m = by_id[message.as_str()];
    assert_eq!(m.frame_type, FrameType::Callback);
    assert_eq!(m.raw, sent[&message]);
    assert_eq!(m.topic(), Some(TOPIC_BOT_MESSAGE));
    assert_eq!(m.headers.app_id, Some(gw.app_id()));
    assert!(m.headers.time_ms().is_some());
    assert_eq!(m.data_json().unwrap()["text"]["content"], "打卡");
    assert_eq!(by_id[card.as_str()].topic(), Some(TOPIC_CARD_CALLBACK));

    let ack = gw.wait_ack(&event, PATIENCE).await.expect("event ack");
    assert_eq!(ack["code"], 200);
    assert_eq!(ack["message"], "OK");
    assert_eq!(
        ack["headers"],
        json!({"contentType": "application/json", "messageId": event})
    );
    assert_eq!(
        ack_data(&ack),
        json!({"status": "SUCCESS", "message": "success"})
    );
    let ack = gw.wait_ack(&card, PATIENCE).await.expect("callback ack");
    assert_eq!(ack["code"], 200);
    assert_eq!(ack["headers"]["messageId"], card.as_str());
    assert_eq!(
        ack_data(&ack),
        json!({"response": {"cardData": {"cardParamMap": {"answer": "已到岗"}}}})
    );
    // DingTalk's own robot-message ack: `{"response": null}`.
    let ack = gw
        .wait_ack(&message, PATIENCE)
        .await
        .expect("robot message ack");
    assert_eq!(ack["code"], 200);
    assert_eq!(ack["message"], "OK");
    assert_eq!(
        ack["headers"],
        json!({"contentType": "application/json", "messageId": message})
    );
    assert!(ack["data"].is_string());
    assert_eq!(ack_data(&ack), json!({"response": null}));
    assert_acks_valid(&gw);

    // The open request as DingTalk documents it.
    let open = &gw.open_requests()[0];
    assert_eq!(open["clientId"], CLIENT_ID);
    assert_eq!(open["clientSecret"], CLIENT_SECRET);
    assert_eq!(
        open["subscriptions"],
        serde_json::to_value(default_subscriptions()).unwrap()
    );
    assert_eq!(open["localIp"], "127.0.0.1");
    assert!(open["ua"].as_str().is_some_and(|ua| !ua.is_empty()));
    client
        .wait_status("connected", |s| s.connected && s.connection_id.is_some())
        .await;
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_frame_is_acknowledged_only_after_the_handler_returns() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let handler = Recorder::gated(gate.clone());
    let client = spawn(config(&gw), handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let id = gw.push_event("attendance_check_record", "{}");
    handler.wait("the frame", |f| !f.is_empty()).await;

    // The handler is inside `handle`: a ping is still answered...
    let ping = gw.send_ping().expect("connected");
    let pong = gw
        .wait_ack(&ping, PATIENCE)
        .await
        .expect("ping answered while the handler is busy");
    assert_eq!(pong["code"], 200);
    // ...and the frame has no answer at all (the ping's came after it).
    assert!(gw.acks().iter().all(|(m, _)| m != &id), "{:?}", gw.acks());

    gate.add_permits(1);
    let ack = gw
        .wait_ack(&id, PATIENCE)
        .await
        .expect("ack after the handler returned");
    assert_eq!(ack["code"], 200);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_frame_is_redelivered_and_handled_again() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap()
        .with_redeliver_after(Duration::from_millis(300));
    let handler = Recorder::new();
    handler.fail.store(true, Ordering::SeqCst);
    let client = spawn(config(&gw), handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let event = gw.push_event("user_add_org", r#"{"userId":["a"]}"#);
    let message = gw.push_callback(TOPIC_BOT_MESSAGE, r#"{"msgId":"m1"}"#);

    // Failures are answered, but not as consumed (500, and LATER for an event).
    let nack = gw
        .wait_for(PATIENCE, |g| {
            g.acks().into_iter().find(|(id, _)| id == &event)
        })
        .await
        .expect("an answer to the failed event")
        .1;
    assert_eq!(nack["code"], 500);
    assert_eq!(ack_data(&nack)["status"], "LATER");
    let nack = gw
        .wait_for(PATIENCE, |g| {
            g.acks().into_iter().find(|(id, _)| id == &message)
        })
        .await
        .expect("an answer to the failed callback")
        .1;
    assert_eq!(nack["code"], 500);
    assert!(gw.unconsumed().contains(&event) && gw.unconsumed().contains(&message));

    // The gateway sends the event again; once the handler works it is consumed.
    handler
        .wait("the event again", |_| handler.calls(&event) >= 2)
        .await;
    handler.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        gw.wait_ack(&event, PATIENCE).await.expect("event consumed")["code"],
        200
    );
    assert!(gw.deliveries(&event) >= 2);
    assert_acks_valid(&gw);
    // The robot message is not sent again: DingTalk never resends one.
    assert_eq!(gw.deliveries(&message), 1);
    assert_eq!(handler.calls(&message), 1);
    // Each delivery is the same frame: same messageId and data.
    let frames = handler.frames();
    let events: Vec<_> = frames
        .iter()
        .filter(|f| f.message_id() == Some(&event))
        .collect();
    assert!(
        events
            .iter()
            .all(|f| f.data == events[0].data && f.headers.event_id == events[0].headers.event_id)
    );
    client.stop().await.unwrap();
}

/// DingTalk may send an unacked EVENT again while its first copy is still
/// with the handler: the handler runs once, and a copy arriving after the
/// ack gets the same ack again.
#[tokio::test]
async fn a_resend_of_a_frame_in_flight_reaches_the_handler_once() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap()
        .with_redeliver_after(Duration::from_secs(3600));
    let gate = Arc::new(Semaphore::new(0));
    let handler = Recorder::gated(gate.clone());
    let client = spawn(config(&gw), handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let a = gw.push_event("attendance_check_record", r#"{"n":1}"#);
    handler.wait("frame A", |f| !f.is_empty()).await;
    assert!(gw.resend(&a), "resent while the handler runs");
    let c = gw.push_event("attendance_check_record", r#"{"n":2}"#);
    gate.add_permits(3);
    // C was sent after the copy of A, and frames are handled in order: once
    // C is acknowledged the copy has been dealt with.
    assert!(gw.wait_ack(&c, PATIENCE).await.is_some());
    assert_eq!(handler.calls(&a), 1);
    assert_eq!(handler.calls(&c), 1);
    let ack = gw.wait_ack(&a, PATIENCE).await.expect("A acknowledged");
    assert_eq!(ack_data(&ack)["status"], "SUCCESS");

    // A copy of a handled frame gets the cached ack, not the handler.
    let answers = |g: &SandboxStreamGateway| g.acks().iter().filter(|(m, _)| m == &a).count();
    let before = answers(&gw);
    assert!(gw.resend(&a));
    gw.wait_for(PATIENCE, |g| (answers(g) > before).then_some(()))
        .await
        .expect("the copy answered");
    let again = gw
        .acks()
        .into_iter()
        .rev()
        .find(|(m, _)| m == &a)
        .unwrap()
        .1;
    assert_eq!(again, ack);
    assert_eq!(handler.calls(&a), 1);
    assert_acks_valid(&gw);
    client.stop().await.unwrap();
}

/// A full queue stops the reading, it drops nothing: every frame reaches the
/// handler, in order, once it has room again.
#[tokio::test]
async fn a_full_queue_holds_frames_back_without_losing_them() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let handler = Recorder::gated(gate.clone());
    let mut cfg = config(&gw);
    cfg.queue_capacity = 1;
    let client = spawn(cfg, handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let first = gw.push_event("attendance_check_record", r#"{"n":0}"#);
    handler.wait("the first frame", |f| !f.is_empty()).await;
    let mut ids = vec![first];
    for n in 1..6 {
        ids.push(gw.push_callback(TOPIC_BOT_MESSAGE, &format!(r#"{{"msgId":"m{n}"}}"#)));
    }
    gate.add_permits(ids.len());
    for id in &ids {
        assert!(
            gw.wait_ack(id, PATIENCE).await.is_some(),
            "{id} acknowledged"
        );
    }
    let handled: Vec<String> = handler
        .frames()
        .iter()
        .map(|f| f.message_id().unwrap().to_owned())
        .collect();
    assert_eq!(handled, ids, "each once, in order");
    client.stop().await.unwrap();
}

/// The gateway's redelivery timer resends an event the handler is still
/// busy with: waiters see the redelivery (the gateway tells them), and the
/// client does not hand the copy to the handler.
#[tokio::test]
async fn a_timed_redelivery_is_seen_and_not_handled_twice() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap()
        .with_redeliver_after(Duration::from_millis(200));
    let gate = Arc::new(Semaphore::new(0));
    let handler = Recorder::gated(gate.clone());
    let client = spawn(config(&gw), handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let a = gw.push_event("attendance_check_record", "{}");
    handler.wait("frame A", |f| !f.is_empty()).await;
    // Nothing else happens meanwhile: only the timer's resend wakes this.
    gw.wait_for(PATIENCE, |g| (g.deliveries(&a) >= 2).then_some(()))
        .await
        .expect("redelivered");
    gate.add_permits(1);
    assert!(gw.wait_ack(&a, PATIENCE).await.is_some());
    assert_eq!(handler.calls(&a), 1);
    assert_acks_valid(&gw);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn ping_is_answered_with_its_opaque() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let client = spawn(config(&gw), Recorder::new());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let ping = gw.send_ping().expect("connected");
    let ack = gw.wait_ack(&ping, PATIENCE).await.expect("pong");
    let sent: HashMap<String, String> = gw.sent_frames().into_iter().collect();
    let frame: Value = serde_json::from_str(&sent[&ping]).unwrap();
    assert_eq!(ack["code"], 200);
    assert_eq!(ack["headers"]["messageId"], ping.as_str());
    assert_eq!(ack["data"], frame["data"], "the data goes back as sent");
    assert!(ack_data(&ack)["opaque"].is_string());
    client.stop().await.unwrap();
}

/// Pushes an event and a robot message the handler fails (so they stay
/// unconsumed), lets it work again, breaks the connection with `fault`, and
/// checks that the client reconnects with a fresh ticket and gets the event
/// again, not the robot message (DingTalk never resends one). The gateway's
/// redelivery timer is an hour, so only the reconnect can bring it back.
async fn reconnects_and_gets_unconsumed_frames(fault: impl Fn(&SandboxStreamGateway) -> bool) {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap()
        .with_redeliver_after(Duration::from_secs(3600));
    let handler = Recorder::new();
    handler.fail.store(true, Ordering::SeqCst);
    let mut client = spawn(config(&gw), handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let a = gw.push_event("user_add_org", r#"{"n":1}"#);
    let b = gw.push_callback(TOPIC_BOT_MESSAGE, r#"{"n":2}"#);
    let answered = |id: &str| {
        let id = id.to_owned();
        move |g: &SandboxStreamGateway| g.acks().iter().any(|(m, _)| m == &id).then_some(())
    };
    gw.wait_for(PATIENCE, answered(&a))
        .await
        .expect("a answered");
    gw.wait_for(PATIENCE, answered(&b))
        .await
        .expect("b answered");
    assert_eq!(gw.unconsumed(), vec![a.clone(), b.clone()]);
    handler.fail.store(false, Ordering::SeqCst);

    assert!(fault(&gw), "a connection to break");
    assert!(gw.wait_connections(2, PATIENCE).await, "reconnected");
    assert!(gw.wait_ack(&a, PATIENCE).await.is_some());
    assert_eq!(handler.calls(&a), 2);
    assert_eq!(handler.calls(&b), 1);
    assert_eq!(gw.deliveries(&b), 1);
    let tickets = gw.tickets_used();
    assert_eq!(tickets.len(), 2);
    assert_ne!(tickets[0], tickets[1], "a fresh ticket for each connection");
    assert!(gw.opens() >= 2);
    // The frames came on the new connection.
    let frames = handler.frames();
    let last = frames
        .iter()
        .rev()
        .find(|f| f.message_id() == Some(&a))
        .unwrap();
    assert_ne!(last.headers.connection_id, frames[0].headers.connection_id);
    client
        .wait_status("reconnected", |s| s.connections == 2 && s.connected)
        .await;
    client.stop().await.unwrap();
}

#[tokio::test]
async fn disconnect_leads_to_a_new_connection_and_redelivery() {
    reconnects_and_gets_unconsumed_frames(|gw| gw.send_disconnect().is_some()).await;
}

#[tokio::test]
async fn a_dropped_connection_leads_to_a_new_connection_and_redelivery() {
    reconnects_and_gets_unconsumed_frames(SandboxStreamGateway::drop_connection).await;
}

/// DingTalk never resends a robot message: one queued behind a slow frame
/// when the gateway says `disconnect` is still handled, once, and acknowledged
/// on the old connection (usable for ~10 s; here for PATIENCE).
#[tokio::test]
async fn a_robot_message_queued_at_disconnect_is_handled_once() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap()
        .with_disconnect_grace(PATIENCE);
    let gate = Arc::new(Semaphore::new(0));
    let handler = Recorder::gated(gate.clone());
    let mut cfg = config(&gw);
    cfg.handler_grace = PATIENCE;
    let mut client = spawn(cfg, handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let a = gw.push_event("attendance_check_record", "{}");
    handler.wait("frame A", |f| !f.is_empty()).await;
    let b = gw.push_callback(
        TOPIC_BOT_MESSAGE,
        r#"{"msgId":"b1","text":{"content":"打卡"},"senderStaffId":"lisi"}"#,
    );
    let bye = gw.send_disconnect().expect("connected");
    // Answered as soon as it is read, so B (sent before it) is queued.
    gw.wait_ack(&bye, PATIENCE)
        .await
        .expect("disconnect answered");
    gate.add_permits(2);
    let ack = gw
        .wait_ack(&b, PATIENCE)
        .await
        .expect("B acknowledged after the disconnect");
    assert_eq!(ack["code"], 200);
    assert_eq!(ack_data(&ack), json!({"response": null}));
    assert!(gw.wait_ack(&a, PATIENCE).await.is_some());
    assert!(gw.wait_connections(2, PATIENCE).await);
    client
        .wait_status("reconnected", |s| s.connections == 2 && s.connected)
        .await;
    assert_eq!(handler.calls(&b), 1);
    assert_eq!(gw.deliveries(&b), 1);
    assert_acks_valid(&gw);
    client.stop().await.unwrap();
}

/// A broken socket cannot carry acks, but a robot message already read is
/// still handed to the handler (DingTalk will not send it again); the event
/// in flight comes again from the gateway.
#[tokio::test]
async fn a_robot_message_queued_when_the_socket_breaks_is_still_handled() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let handler = Recorder::gated(gate.clone());
    let mut cfg = config(&gw);
    cfg.handler_grace = PATIENCE;
    let mut client = spawn(cfg, handler.clone());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let a = gw.push_event("attendance_check_record", "{}");
    handler.wait("frame A", |f| !f.is_empty()).await;
    let b = gw.push_callback(TOPIC_BOT_MESSAGE, r#"{"msgId":"b2"}"#);
    // The ping's answer proves the client read B, sent before it.
    let ping = gw.send_ping().expect("connected");
    gw.wait_ack(&ping, PATIENCE).await.expect("pong");
    assert!(gw.drop_connection());
    client
        .wait_status("the broken socket noticed", |s| !s.connected)
        .await;
    gate.add_permits(3);
    handler.wait("B handled", |_| handler.calls(&b) == 1).await;
    assert!(gw.wait_connections(2, PATIENCE).await);
    // A came again on the new connection; the handler had finished it, so
    // the cached ack answered it there, without a second call.
    assert!(gw.wait_ack(&a, PATIENCE).await.is_some());
    assert_eq!(gw.deliveries(&a), 2);
    assert_eq!(handler.calls(&a), 1);
    assert_eq!(handler.calls(&b), 1);
    assert_eq!(gw.deliveries(&b), 1);
    assert!(
        gw.acks().iter().all(|(m, _)| m != &b),
        "no ack could go out"
    );
    assert_acks_valid(&gw);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn disconnect_is_acknowledged_before_the_client_leaves() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let mut client = spawn(config(&gw), Recorder::new());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let id = gw.send_disconnect().expect("connected");
    let ack = gw
        .wait_ack(&id, PATIENCE)
        .await
        .expect("disconnect answered");
    assert_eq!(ack["code"], 200);
    // The client leaves by itself (the grace is 10 s, PATIENCE far more) and
    // comes back; a disconnect is not a failure.
    assert!(gw.wait_connections(2, PATIENCE).await);
    let s = client
        .wait_status("reconnected", |s| s.connections == 2 && s.connected)
        .await;
    assert_eq!(s.last_error, None);
    client.stop().await.unwrap();
}

#[tokio::test]
async fn a_dead_connection_is_detected_by_ping_timeout() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let mut config = config(&gw);
    config.keepalive_idle = Duration::from_millis(300);
    config.ping_timeout = Duration::from_millis(500);
    let mut client = spawn(config, Recorder::new());
    assert!(gw.wait_connections(1, PATIENCE).await);
    assert!(gw.freeze_connection());
    let s = client
        .wait_status("a ping timeout", |s| {
            matches!(s.last_error, Some(StreamError::PingTimeout(_)))
        })
        .await;
    assert!(s.failures >= 1);
    assert!(
        gw.wait_connections(2, PATIENCE).await,
        "reconnected after the dead link"
    );
    gw.drop_connection();
    client.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_credentials_are_a_typed_error_retried_with_backoff() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let mut config = config(&gw);
    config.client_secret = "not-the-secret".into();
    let started = Instant::now();
    let mut client = spawn(config, Recorder::new());
    let s = client
        .wait_status("three failures", |s| s.failures >= 3)
        .await;
    let elapsed = started.elapsed();
    match s.last_error {
        Some(StreamError::OpenRejected {
            status, ref code, ..
        }) => {
            assert_eq!(status, 400);
            assert_eq!(code, "invalidClientIdOrSecret");
        }
        ref other => panic!("expected OpenRejected, got {other:?}"),
    }
    assert!(s.last_error.as_ref().unwrap().is_rejected());
    assert!(!s.connected);
    assert_eq!(gw.connections(), 0);
    // Three failures mean two waits, each at least half its nominal delay
    // (base, then 2 × base): a floor, whatever the machine's speed.
    let floor = BACKOFF.nominal(1) / 2 + BACKOFF.nominal(2) / 2;
    assert!(elapsed >= floor, "{elapsed:?} < {floor:?}: no backoff");
    // No hot loop: every open after the first waited at least base / 2.
    let opens = gw.opens();
    let elapsed = started.elapsed();
    let most = 1 + (elapsed.as_secs_f64() / (BACKOFF.base.as_secs_f64() / 2.0)) as u64;
    assert!(opens <= most, "{opens} opens in {elapsed:?}");
    // The secret never shows in the error.
    assert!(!s.last_error.unwrap().to_string().contains("not-the-secret"));
    client.stop().await.unwrap();
}

#[tokio::test]
async fn refused_opens_are_retried_with_backoff() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    gw.refuse_opens(2);
    let started = Instant::now();
    let mut client = spawn(config(&gw), Recorder::new());
    assert!(gw.wait_connections(1, PATIENCE).await);
    let elapsed = started.elapsed();
    assert_eq!(gw.opens(), 3, "two refused, the third accepted");
    let floor = BACKOFF.nominal(1) / 2 + BACKOFF.nominal(2) / 2;
    assert!(elapsed >= floor, "{elapsed:?} < {floor:?}: no backoff");
    let s = client.wait_status("connected", |s| s.connected).await;
    assert!(matches!(
        s.last_error,
        Some(StreamError::OpenUnavailable { status: 503, .. })
    ));
    // Once frames flow, the failure count starts again.
    let id = gw.push_event("user_add_org", "{}");
    assert!(gw.wait_ack(&id, PATIENCE).await.is_some());
    client
        .wait_status("failures reset", |s| s.failures == 0)
        .await;
    client.stop().await.unwrap();
}

/// A gateway that accepts the upgrade and closes at once has not shown the
/// connection works: each such close is one more failure, and the waits
/// between the opens grow.
#[tokio::test]
async fn a_close_right_after_the_upgrade_meets_the_backoff() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    gw.close_after_upgrade(3);
    let started = Instant::now();
    let mut client = spawn(config(&gw), Recorder::new());
    let s = client
        .wait_status("three failures", |s| s.failures >= 3)
        .await;
    assert!(
        matches!(
            s.last_error,
            Some(StreamError::Closed | StreamError::WebSocket(_))
        ),
        "{s:?}"
    );
    assert!(gw.wait_connections(4, PATIENCE).await, "the fourth stays");
    let elapsed = started.elapsed();
    assert_eq!(gw.opens(), 4);
    // Three waits, each at least half its nominal delay.
    let floor = BACKOFF.nominal(1) / 2 + BACKOFF.nominal(2) / 2 + BACKOFF.nominal(3) / 2;
    assert!(elapsed >= floor, "{elapsed:?} < {floor:?}: no backoff");
    // A frame on the fourth proves it: the count starts again.
    let id = gw.push_event("user_add_org", "{}");
    assert!(gw.wait_ack(&id, PATIENCE).await.is_some());
    client
        .wait_status("failures reset", |s| s.failures == 0)
        .await;
    client.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_client_promptly() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let client = spawn(config(&gw), Recorder::new());
    assert!(gw.wait_connections(1, PATIENCE).await);
    client.stop().await.unwrap();
    assert!(gw.wait_disconnected(PATIENCE).await, "the socket is closed");
    // With no client connected this frame waits for the last one below.
    let id = gw.push_event("user_add_org", "{}");

    // Shutdown also interrupts a backoff wait, however long.
    let mut cfg = config(&gw);
    cfg.client_secret = "wrong".into();
    cfg.reconnect = Backoff {
        base: Duration::from_secs(3600),
        max: Duration::from_secs(3600),
    };
    let mut client = spawn(cfg, Recorder::new());
    client
        .wait_status("the first failure", |s| s.failures == 1)
        .await;
    client.stop().await.unwrap();

    // And a handler that never returns is dropped after the grace time.
    let gate = Arc::new(Semaphore::new(0));
    let handler = Recorder::gated(gate);
    let mut cfg = config(&gw);
    cfg.handler_grace = Duration::from_millis(200);
    let client = spawn(cfg, handler.clone());
    assert!(gw.wait_connections(2, PATIENCE).await);
    handler.wait("the queued frame", |f| !f.is_empty()).await;
    client.stop().await.unwrap();
    assert!(gw.unconsumed().contains(&id), "never acknowledged");
}

/// The sandbox takes an answer only as DingTalk's envelope, on the
/// connection its frame went out on.
#[tokio::test]
async fn the_gateway_checks_each_answer_and_its_connection() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    rollcall::tls::install_crypto_provider();
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let client = StreamClient::new(config(&gw), Recorder::new()).unwrap();
    let (mut first, _) =
        tokio_tungstenite::connect_async(client.open_connection().await.unwrap().url())
            .await
            .unwrap();
    assert!(gw.wait_connections(1, PATIENCE).await);
    let id = gw.push_callback(TOPIC_BOT_MESSAGE, r#"{"msgId":"x"}"#);
    let frame = tokio::time::timeout(PATIENCE, first.next())
        .await
        .expect("the frame")
        .unwrap()
        .unwrap();
    assert!(frame.to_text().unwrap().contains(&id));
    let good = json!({"code": 200, "headers": {"contentType": "application/json", "messageId": id},
                      "message": "OK", "data": "{\"response\":null}"});
    let mut bad = vec![good.clone(); 4];
    bad[0]["data"] = json!({"response": null}); // an object, not a string
    bad[1]["headers"]["contentType"] = json!("text/plain");
    bad[2]["data"] = json!("{\"status\":\"SUCCESS\"}"); // an EVENT's data
    bad[3].as_object_mut().unwrap().remove("code");
    for b in &bad {
        first.send(Message::text(b.to_string())).await.unwrap();
    }
    gw.wait_for(PATIENCE, |g| (g.invalid_acks().len() == 4).then_some(()))
        .await
        .expect("four answers refused");
    // A new connection (the sandbox drops the old one): the right answer
    // there does not count, the frame never went out on it.
    let (mut second, _) =
        tokio_tungstenite::connect_async(client.open_connection().await.unwrap().url())
            .await
            .unwrap();
    assert!(gw.wait_connections(2, PATIENCE).await);
    second.send(Message::text(good.to_string())).await.unwrap();
    gw.wait_for(PATIENCE, |g| (g.invalid_acks().len() == 5).then_some(()))
        .await
        .expect("the answer on the other connection refused");
    assert_eq!(gw.unconsumed(), vec![id.clone()]);
    // Once the frame went out on it, the same answer consumes it.
    assert!(gw.resend(&id));
    tokio::time::timeout(PATIENCE, second.next())
        .await
        .expect("the frame again")
        .unwrap()
        .unwrap();
    second.send(Message::text(good.to_string())).await.unwrap();
    let ack = gw.wait_ack(&id, PATIENCE).await.expect("consumed");
    assert_eq!(ack, good);
    assert_eq!(gw.invalid_acks().len(), 5);
    drop(first);
    let _ = second.close(None).await;
}

/// A handler that never returns and says when its call was dropped.
struct Stuck {
    entered: watch::Sender<bool>,
    dropped: watch::Sender<bool>,
}

struct SetOnDrop(watch::Sender<bool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

#[async_trait::async_trait]
impl FrameHandler for Stuck {
    async fn handle(&self, _frame: &StreamFrame) -> Result<Option<Value>, HandlerError> {
        let _flag = SetOnDrop(self.dropped.clone());
        self.entered.send_replace(true);
        std::future::pending().await
    }
}

/// Dropping the `run` future (instead of shutting down) drops the handler's
/// call too: no worker outlives the client.
#[tokio::test]
async fn dropping_the_client_drops_its_handler_call() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let handler = Arc::new(Stuck {
        entered: watch::Sender::new(false),
        dropped: watch::Sender::new(false),
    });
    let (mut entered, mut dropped) = (handler.entered.subscribe(), handler.dropped.subscribe());
    let client = StreamClient::new(config(&gw), handler.clone()).unwrap();
    let task = tokio::spawn(client.run(std::future::pending()));
    assert!(gw.wait_connections(1, PATIENCE).await);
    gw.push_event("user_add_org", "{}");
    tokio::time::timeout(PATIENCE, entered.wait_for(|e| *e))
        .await
        .expect("the handler called")
        .unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    tokio::time::timeout(PATIENCE, dropped.wait_for(|d| *d))
        .await
        .expect("the handler's call dropped with the client")
        .unwrap();
}

#[tokio::test]
async fn tickets_are_single_use_and_checked() {
    rollcall::tls::install_crypto_provider();
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let client = StreamClient::new(config(&gw), Recorder::new()).unwrap();
    let ticket = client.open_connection().await.unwrap();
    assert_eq!(ticket.endpoint, gw.ws_endpoint());
    let unknown = rollcall::platform::dingtalk::stream::ConnectionTicket {
        endpoint: ticket.endpoint.clone(),
        ticket: "no-such-ticket".into(),
    };
    let err = tokio_tungstenite::connect_async(unknown.url())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let (mut ws, _) = tokio_tungstenite::connect_async(ticket.url())
        .await
        .expect("the ticket opens once");
    let err = tokio_tungstenite::connect_async(ticket.url())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("401"),
        "a used ticket is refused: {err}"
    );
    let _ = ws.close(None).await;

    // Wrong credentials: the error DingTalk's API gives, as a typed error.
    let mut bad = config(&gw);
    bad.client_id = "someone-else".into();
    let err = StreamClient::new(bad, Recorder::new())
        .unwrap()
        .open_connection()
        .await
        .unwrap_err();
    assert!(
        matches!(err, StreamError::OpenRejected { status: 400, ref code, .. } if code == "invalidClientIdOrSecret"),
        "{err:?}"
    );
    // The Go SDK also subscribes SYSTEM topics: accepted.
    let mut go_like = config(&gw);
    for topic in ["ping", "disconnect"] {
        go_like.subscriptions.push(Subscription {
            kind: "SYSTEM".into(),
            topic: topic.into(),
        });
    }
    StreamClient::new(go_like, Recorder::new())
        .unwrap()
        .open_connection()
        .await
        .expect("SYSTEM subscriptions accepted");
    // An empty secret never reaches the network.
    let mut empty = config(&gw);
    empty.client_secret.clear();
    assert!(matches!(
        StreamClient::new(empty, Recorder::new()),
        Err(StreamError::Config(_))
    ));
}

/// Waits at a barrier: only frames handled at the same time get through.
struct Together(tokio::sync::Barrier);

#[async_trait::async_trait]
impl FrameHandler for Together {
    async fn handle(&self, _frame: &StreamFrame) -> Result<Option<Value>, HandlerError> {
        self.0.wait().await;
        Ok(None)
    }
}

/// With `handler_concurrency` 4, four frames are in the handler at once
/// (each waits for the other three at a barrier, which one-at-a-time
/// handling would never pass) and all are acknowledged.
#[tokio::test]
async fn frames_are_handled_concurrently_when_allowed() {
    let gw = SandboxStreamGateway::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .unwrap();
    let mut cfg = config(&gw);
    cfg.handler_concurrency = 4;
    let client = spawn(cfg, Arc::new(Together(tokio::sync::Barrier::new(4))));
    assert!(gw.wait_connections(1, PATIENCE).await);
    let ids: Vec<String> = (0..8)
        .map(|n| gw.push_callback(TOPIC_BOT_MESSAGE, &format!(r#"{{"msgId":"c{n}"}}"#)))
        .collect();
    for id in &ids {
        assert!(
            gw.wait_ack(id, PATIENCE).await.is_some(),
            "{id} acknowledged"
        );
    }
    assert_acks_valid(&gw);
    client.stop().await.unwrap();
}
