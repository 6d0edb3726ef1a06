//! `GET /export/{token}`: a case package or a monthly sheet asked for in chat, served once (a
//! transfer cut off before its end may be fetched again).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::evidence::download::{Taken, cut_off, take, transferred};
use crate::runtime::Runtime;

pub async fn download(State(rt): State<Runtime>, Path(token): Path<String>) -> Response {
    // Tokens are 64 hex digits; anything else is not worth a query.
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (StatusCode::NOT_FOUND, "no such download\n").into_response();
    }
    match take(&rt, &token).await {
        Ok(Taken::Package {
            id,
            lease,
            file_name,
            content_type,
            bytes,
        }) => (
            [
                (header::CONTENT_TYPE, content_type.to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{file_name}\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
            // No Content-Length: the stream's end is then only reached
            // once every chunk went out, which is what marks it downloaded.
            Body::from_stream(Transfer {
                rt: rt.clone(),
                id,
                lease,
                bytes: bytes.into(),
                sent: 0,
                ended: false,
            }),
        )
            .into_response(),
        Ok(Taken::Busy) => (
            StatusCode::CONFLICT,
            "this package is being downloaded right now: if that download failed, open the link again in a moment\n",
        )
            .into_response(),
        Ok(Taken::Gone) => (
            StatusCode::GONE,
            "this link was used already or has expired: ask for the package again with /export\n",
        )
            .into_response(),
        Ok(Taken::NotFound) => (StatusCode::NOT_FOUND, "no such download\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "serving a package failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "try again later\n").into_response()
        }
    }
}

/// Bytes served at a time.
const CHUNK: usize = 64 * 1024;

/// One transfer of a package: when its last chunk went out and the end is
/// asked for, the link is used up ([`transferred`]); dropped before that
/// (the client went away), the link works again ([`cut_off`]).
struct Transfer {
    rt: Runtime,
    id: i64,
    lease: String,
    bytes: axum::body::Bytes,
    sent: usize,
    ended: bool,
}

impl futures::Stream for Transfer {
    type Item = Result<axum::body::Bytes, std::io::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.sent < this.bytes.len() {
            let end = (this.sent + CHUNK).min(this.bytes.len());
            let chunk = this.bytes.slice(this.sent..end);
            this.sent = end;
            return std::task::Poll::Ready(Some(Ok(chunk)));
        }
        if !this.ended {
            this.ended = true;
            let (rt, id, lease) = (this.rt.clone(), this.id, this.lease.clone());
            tokio::spawn(async move {
                if let Err(e) = transferred(&rt, id, &lease).await {
                    tracing::error!(id, error = %e, "recording a complete download failed");
                }
            });
        }
        std::task::Poll::Ready(None)
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let (rt, id, sent) = (self.rt.clone(), self.id, self.sent);
        let lease = std::mem::take(&mut self.lease);
        tracing::info!(
            id,
            sent,
            "a package transfer was cut off: its link works again"
        );
        tokio::spawn(async move {
            if let Err(e) = cut_off(&rt, id, &lease).await {
                tracing::error!(id, error = %e, "giving a cut-off download its link back failed");
            }
        });
    }
}

/// `GET /evidence/{tenant}/checkpoint`: the last checkpoint this server
/// signed (or found signed and consistent) for the tenant, from its witness
/// file, as a signed note, for anyone to keep a copy of: a later package
/// must be consistent with it.
pub async fn checkpoint(State(rt): State<Runtime>, Path(tenant): Path<String>) -> Response {
    if rt.tenant(&tenant).is_none() {
        return (StatusCode::NOT_FOUND, "no such tenant\n").into_response();
    }
    match rt.witness.read(&tenant) {
        Ok(Some(w)) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            w.note,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no checkpoint signed yet\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading the witness file failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "try again later\n").into_response()
        }
    }
}
