//! RFC 3161 time-stamps of signed checkpoints (`[evidence] tsa_url`): a
//! time-stamping authority signs the SHA-256 of a checkpoint's note with
//! its own time, so the log's state on that date is proved by a third
//! party, not by the employer's clock. The answer (`.tsr`) is kept with the
//! checkpoint and goes into packages as `checkpoint.tsr`; anyone checks it
//! with `openssl ts -verify -in checkpoint.tsr -data checkpoint.txt
//! -CAfile <the TSA's certificate chain>`.
//!
//! Here the answer is checked for what does not need the TSA's certificate:
//! the status, that it time-stamps this note (the message imprint) and this
//! request (the nonce). Its signature is the verifier's to check, against
//! the TSA's published chain.

use chrono::{DateTime, Utc};
use cmpv2::status::PkiStatus;
use cms::cert::x509::spki::AlgorithmIdentifier;
use cms::signed_data::EncapsulatedContentInfo;
use der::asn1::{Int, ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode, SliceReader};
use entity::evidence_checkpoint;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use sha2::{Digest, Sha256};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

const SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// A TSA's answer is a few kilobytes (its certificate chain included).
const MAX_ANSWER: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    #[error("time-stamp request to {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("the time-stamp answer is not one: {0}")]
    Malformed(String),
    #[error("the time-stamping authority refused: {0}")]
    Refused(String),
    #[error("the time-stamp is not of this checkpoint: {0}")]
    Mismatch(&'static str),
    #[error(transparent)]
    Db(#[from] DbErr),
}

fn malformed(e: impl std::fmt::Display) -> TsaError {
    TsaError::Malformed(e.to_string())
}

fn imprint(data: &[u8]) -> Result<MessageImprint, TsaError> {
    Ok(MessageImprint {
        hash_algorithm: AlgorithmIdentifier {
            oid: SHA_256,
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(Sha256::digest(data).to_vec()).map_err(malformed)?,
    })
}

/// A DER `TimeStampReq` for the SHA-256 of `data`, asking for the TSA's
/// certificate in the answer.
pub fn request(data: &[u8], nonce: &[u8]) -> Result<Vec<u8>, TsaError> {
    TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint(data)?,
        req_policy: None,
        nonce: Some(Int::new(nonce).map_err(malformed)?),
        cert_req: true,
        extensions: None,
    }
    .to_der()
    .map_err(malformed)
}

/// Checks a DER `TimeStampResp` to [`request`]`(data, nonce)`: granted, a
/// token over this data's SHA-256 and this nonce. Returns the TSA's time.
pub fn check(answer: &[u8], data: &[u8], nonce: &[u8]) -> Result<DateTime<Utc>, TsaError> {
    let resp = TimeStampResp::from_der(answer).map_err(malformed)?;
    if !matches!(
        resp.status.status,
        PkiStatus::Accepted | PkiStatus::GrantedWithMods
    ) {
        return Err(TsaError::Refused(format!("{:?}", resp.status.status)));
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| malformed("granted without a token"))?;
    if token.content_type != SIGNED_DATA {
        return Err(malformed("the token is not signed data"));
    }
    // Only SignedData's head is read (version, digest algorithms, the
    // encapsulated content): its certificates are the verifier's business,
    // and TSAs send them in ways a strict DER reader refuses (the signer's
    // certificate twice in the SET OF).
    let mut reader = SliceReader::new(token.content.value()).map_err(malformed)?;
    let _version = Any::decode(&mut reader).map_err(malformed)?;
    let _digests = Any::decode(&mut reader).map_err(malformed)?;
    let encapsulated = EncapsulatedContentInfo::decode(&mut reader).map_err(malformed)?;
    if encapsulated.econtent_type != TST_INFO {
        return Err(malformed("the token's content is not a TSTInfo"));
    }
    let content = encapsulated
        .econtent
        .ok_or_else(|| malformed("the token has no content"))?;
    let octets: OctetString = content.decode_as().map_err(malformed)?;
    let info = TstInfo::from_der(octets.as_bytes()).map_err(malformed)?;
    if info.message_imprint != imprint(data)? {
        return Err(TsaError::Mismatch("another message imprint"));
    }
    if info.nonce.as_ref().map(Int::as_bytes)
        != Some(Int::new(nonce).map_err(malformed)?.as_bytes())
    {
        return Err(TsaError::Mismatch("another nonce"));
    }
    let secs = info.gen_time.to_unix_duration().as_secs();
    DateTime::from_timestamp(i64::try_from(secs).map_err(malformed)?, 0)
        .ok_or_else(|| malformed("a time out of range"))
}

/// The HTTP client for time-stamp requests (30 s per request).
pub fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("a client without custom TLS settings builds")
    })
}

/// Asks the TSA at `url` to time-stamp `data`; returns its checked answer
/// and time.
pub async fn stamp(
    http: &reqwest::Client,
    url: &str,
    data: &[u8],
) -> Result<(Vec<u8>, DateTime<Utc>), TsaError> {
    let fail = |reason: String| TsaError::Request {
        url: url.to_owned(),
        reason,
    };
    // Positive and minimal: a first byte of 1, then 7 random ones.
    let mut nonce = [1u8; 8];
    nonce[1..].copy_from_slice(&rand::random::<[u8; 7]>());
    let body = request(data, &nonce)?;
    let response = http
        .post(url)
        .header("content-type", "application/timestamp-query")
        .body(body)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    if bytes.len() > MAX_ANSWER {
        return Err(fail(format!("an answer of {} bytes", bytes.len())));
    }
    let at = check(&bytes, data, &nonce)?;
    Ok((bytes.to_vec(), at))
}

/// Time-stamps `tenant`'s last checkpoint if it has none yet. Returns the
/// size of the checkpoint stamped, if one was.
pub async fn stamp_latest<C: ConnectionTrait>(
    conn: &C,
    http: &reqwest::Client,
    url: &str,
    tenant: &str,
) -> Result<Option<i64>, TsaError> {
    let Some(last) = evidence_checkpoint::Entity::find()
        .filter(evidence_checkpoint::Column::TenantId.eq(tenant))
        .order_by_desc(evidence_checkpoint::Column::Size)
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    if last.tsr.is_some() {
        return Ok(None);
    }
    let (tsr, at) = stamp(http, url, last.note.as_bytes()).await?;
    evidence_checkpoint::Entity::update_many()
        .col_expr(evidence_checkpoint::Column::Tsr, Expr::value(tsr))
        .col_expr(evidence_checkpoint::Column::StampedAt, Expr::value(at))
        .filter(evidence_checkpoint::Column::Id.eq(last.id))
        .filter(evidence_checkpoint::Column::Tsr.is_null())
        .exec(conn)
        .await?;
    Ok(Some(last.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_der_with_the_imprint_and_nonce() {
        let der = request(b"note\n", &[1, 2, 3]).unwrap();
        let back = TimeStampReq::from_der(&der).unwrap();
        assert_eq!(back.message_imprint, imprint(b"note\n").unwrap());
        assert_eq!(back.nonce.unwrap().as_bytes(), &[1, 2, 3]);
        assert!(back.cert_req);
        // The imprint is the SHA-256 of the data, as `openssl ts -query
        // -data FILE -sha256` makes it.
        assert_eq!(
            back.message_imprint.hashed_message.as_bytes(),
            Sha256::digest(b"note\n").as_slice()
        );
    }

    #[test]
    fn what_is_not_an_answer_is_refused() {
        assert!(matches!(
            check(b"\x30\x03\x02\x01\x02", b"x", &[1]),
            Err(TsaError::Malformed(_))
        ));
        assert!(matches!(
            check(b"", b"x", &[1]),
            Err(TsaError::Malformed(_))
        ));
    }
}
