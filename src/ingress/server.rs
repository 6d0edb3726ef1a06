//! The HTTP server's accept loop. `axum::serve` (0.8) gives hyper no timer,
//! so hyper's header read timeout never fires and a client that opens a
//! connection and sends half a request (slowloris) holds it for ever. Here
//! each connection gets `server.header_timeout_secs` to send a whole request
//! head (also the idle wait between requests on a kept-alive connection),
//! is closed when its client takes nothing of an answer for
//! `server.write_timeout_secs` (a client that never reads), at most
//! `server.max_connections` are served at once (the rest wait in the
//! kernel's listen queue), and a stop drains the connections in flight.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// How the accept loop treats connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

/// How long a stop waits for requests in flight before it closes them.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `stop` completes, then lets the
/// requests in flight finish (at most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        // A free slot first: beyond the limit, connections wait unaccepted.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (socket, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = socket.set_nodelay(true);
        let mut socket = tokio_io_timeout::TimeoutStream::new(socket);
        socket.set_write_timeout(Some(limits.write_timeout));
        let socket = Box::pin(socket);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            router.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(socket), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN:?}: closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client that asks for a large answer and never reads it gives its
    /// slot back once the write timeout passes: with one slot, the next
    /// client is served.
    #[tokio::test]
    async fn a_client_that_never_reads_gives_its_slot_back() {
        let big = vec![b'x'; 64 << 20];
        let router = Router::new().route(
            "/big",
            axum::routing::get(move || {
                let big = big.clone();
                async move { big }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_millis(500),
            max_connections: 1,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, limits, async {
            let _ = rx.await;
        }));
        let mut stuck = tokio::net::TcpStream::connect(addr).await.unwrap();
        stuck
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Never read; meanwhile the next client waits for the one slot.
        let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
        next.write_all(b"GET /nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        // A guard against a hang, not a speed figure.
        tokio::time::timeout(Duration::from_secs(60), next.read_to_end(&mut answer))
            .await
            .expect("the stuck client's slot came back")
            .unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 404"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        drop(stuck);
        tx.send(()).unwrap();
        server.await.unwrap();
    }
}
