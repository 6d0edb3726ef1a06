//! Reading a media download the same way on every platform: its type and
//! file name from the headers, its body up to [`MAX_MEDIA_BYTES`].

use super::PlatformError;

/// The largest media rollcall downloads: WeCom's own upload limit for files
/// (images and voice are 2 MB, video 10 MB, files 20 MB), and the same bound
/// elsewhere (DingTalk publishes no limit for files sent to a robot).
pub const MAX_MEDIA_BYTES: usize = 20 * 1024 * 1024;

/// A downloaded body with what its headers say about it.
pub(crate) struct Download {
    pub content_type: String,
    /// The `Content-Disposition` header, when there is one.
    pub disposition: Option<String>,
    pub bytes: Vec<u8>,
}

/// The file name in a `Content-Disposition: attachment; filename="x.jpg"`.
pub(crate) fn file_name(disposition: &str) -> Option<String> {
    disposition.split(';').find_map(|part| {
        let value = part.trim().strip_prefix("filename=")?;
        let name = value.trim().trim_matches('"');
        (!name.is_empty()).then(|| name.to_owned())
    })
}

/// The refusal of a download over [`MAX_MEDIA_BYTES`]: permanent, since
/// asking again fetches the same file.
pub(crate) fn too_large(what: &str) -> PlatformError {
    PlatformError::Permanent(format!("{what}: larger than {MAX_MEDIA_BYTES} bytes"))
}

/// Reads `response`'s body, refusing one over [`MAX_MEDIA_BYTES`] before
/// reading it when its length is announced, else as soon as it grows past.
/// `what` names the call in errors.
pub(crate) async fn read(
    mut response: reqwest::Response,
    what: &str,
) -> Result<Download, PlatformError> {
    // As UTF-8 (a file name in `Content-Disposition` may be Chinese, sent
    // as raw UTF-8 bytes, which `to_str` refuses).
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let disposition = header(reqwest::header::CONTENT_DISPOSITION);
    if response
        .content_length()
        .is_some_and(|n| n > MAX_MEDIA_BYTES as u64)
    {
        return Err(too_large(what));
    }
    let mut bytes = Vec::new();
    // Without the URL: it may carry a token.
    let failed = |e: reqwest::Error| {
        PlatformError::Retryable(format!("{what}: request failed: {}", e.without_url()))
    };
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if bytes.len() + chunk.len() > MAX_MEDIA_BYTES {
            return Err(too_large(what));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Download {
        content_type,
        disposition,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[rstest::rstest]
    #[case("attachment; filename=\"x.jpg\"", Some("x.jpg"))]
    #[case("attachment;filename=请假条.pdf", Some("请假条.pdf"))]
    #[case("attachment; filename=\"\"", None)]
    #[case("inline", None)]
    fn the_file_name_of_a_disposition(#[case] disposition: &str, #[case] name: Option<&str>) {
        assert_eq!(file_name(disposition).as_deref(), name);
    }
}
