//! The one writer of a SQLite file. SQLite lets one connection write at a
//! time; left to itself, a connection that finds the file locked sleeps and
//! tries again (the busy handler), and whoever tries at the right moment
//! wins. Every write transaction of rollcall's own code on SQLite instead
//! takes its turn here first, in order of arrival, and the inbox's group
//! commit (the callbacks waiting for their acknowledgement) goes before
//! every other waiter: it waits for the transaction under way, never for a
//! queue of them. The waiters sleep on the runtime, not on a connection.
//!
//! What still writes without a turn: apalis' own statements (it polls and
//! acknowledges jobs on its connections) and a few single statements outside
//! any transaction. For them the busy handler stays, so they wait for the
//! current holder like before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Who asks for a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The inbox's group commit: before every other waiter.
    First,
    /// Everyone else, in order of arrival.
    InOrder,
}

/// The queue of write turns on one SQLite file.
#[derive(Debug, Default)]
pub struct Writer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: bool,
    first: VecDeque<oneshot::Sender<()>>,
    in_order: VecDeque<oneshot::Sender<()>>,
}

/// A turn to write; the next waiter's begins when it is dropped.
#[derive(Debug)]
pub struct Permit {
    writer: Arc<Writer>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.writer.hand_on();
    }
}

/// A waiter whose future was dropped before its turn came gives the turn
/// on if it had been handed it meanwhile.
struct Waiting {
    writer: Arc<Writer>,
    turn: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            turn.close();
            if turn.try_recv().is_ok() {
                self.writer.hand_on();
            }
        }
    }
}

impl Writer {
    /// Waits for a turn.
    pub async fn turn(self: &Arc<Self>, who: Turn) -> Permit {
        let turn = {
            let mut s = self
                .state
                .lock()
                .expect("the writer's state is never poisoned");
            if !s.held {
                s.held = true;
                return Permit {
                    writer: self.clone(),
                };
            }
            let (tx, rx) = oneshot::channel();
            match who {
                Turn::First => s.first.push_back(tx),
                Turn::InOrder => s.in_order.push_back(tx),
            }
            rx
        };
        let mut waiting = Waiting {
            writer: self.clone(),
            turn: Some(turn),
        };
        let handed = waiting.turn.as_mut().expect("set just above").await.is_ok();
        // The turn is ours now (`hand_on` never drops a sender it keeps).
        waiting.turn = None;
        debug_assert!(handed);
        Permit {
            writer: self.clone(),
        }
    }

    /// Whether a [`Turn::First`] waits.
    pub fn first_waiting(&self) -> bool {
        !self
            .state
            .lock()
            .expect("the writer's state is never poisoned")
            .first
            .is_empty()
    }

    /// Gives the turn to the next waiter still waiting, or frees it.
    fn hand_on(&self) {
        let mut s = self
            .state
            .lock()
            .expect("the writer's state is never poisoned");
        loop {
            let next = match s.first.pop_front() {
                Some(tx) => tx,
                None => match s.in_order.pop_front() {
                    Some(tx) => tx,
                    None => {
                        s.held = false;
                        return;
                    }
                },
            };
            // A waiter that gave up (its future dropped) refuses it.
            if next.send(()).is_ok() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn order_of(
        writer: &Arc<Writer>,
        arrivals: &[(&'static str, Turn)],
    ) -> Vec<&'static str> {
        let held = writer.turn(Turn::InOrder).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for &(name, who) in arrivals {
            let (w, tx) = (writer.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let _p = w.turn(who).await;
                tx.send(name).unwrap();
            }));
            // Each waiter queues before the next arrives.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(tx);
        drop(held);
        let mut order = Vec::new();
        while let Some(name) = rx.recv().await {
            order.push(name);
        }
        order
    }

    #[tokio::test]
    async fn the_group_commit_goes_before_the_other_waiters_who_keep_their_order() {
        let writer = Arc::new(Writer::default());
        let order = order_of(
            &writer,
            &[
                ("handler", Turn::InOrder),
                ("sender", Turn::InOrder),
                ("commit", Turn::First),
                ("relay", Turn::InOrder),
            ],
        )
        .await;
        assert_eq!(order, ["commit", "handler", "sender", "relay"]);
        assert!(!writer.first_waiting());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_keep_the_turn() {
        let writer = Arc::new(Writer::default());
        let held = writer.turn(Turn::InOrder).await;
        let gave_up = {
            let w = writer.clone();
            tokio::spawn(async move { w.turn(Turn::First).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(writer.first_waiting());
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        // The turn is free again, not lost with the waiter.
        tokio::time::timeout(Duration::from_secs(5), writer.turn(Turn::InOrder))
            .await
            .expect("the turn came back");
    }

    #[tokio::test]
    async fn only_one_holds_a_turn_at_a_time() {
        let writer = Arc::new(Writer::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let (w, inside) = (writer.clone(), inside.clone());
            tasks.spawn(async move {
                let who = if i % 4 == 0 {
                    Turn::First
                } else {
                    Turn::InOrder
                };
                for _ in 0..20 {
                    let _p = w.turn(who).await;
                    assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
}
