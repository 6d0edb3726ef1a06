//! `GET /export/{token}`: a case package asked for in chat, served once.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::evidence::download::{Taken, take};
use crate::runtime::Runtime;

pub async fn download(State(rt): State<Runtime>, Path(token): Path<String>) -> Response {
    // Tokens are 64 hex digits; anything else is not worth a query.
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (StatusCode::NOT_FOUND, "no such download\n").into_response();
    }
    match take(&rt, &token).await {
        Ok(Taken::Package { file_name, bytes }) => (
            [
                (header::CONTENT_TYPE, "application/zip".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{file_name}\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
            bytes,
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
