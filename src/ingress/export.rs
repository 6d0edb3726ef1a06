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
