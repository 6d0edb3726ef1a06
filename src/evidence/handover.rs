//! Evidence key hand-overs. When the signing key is replaced (`rollcall
//! keys rotate --evidence`), the retiring key and the key that follows it
//! both sign one note naming both verifier keys, the time, and the last
//! checkpoint the retiring key signed of every log:
//!
//! ```text
//! rollcall evidence key hand-over
//! old <verifier key>
//! new <verifier key>
//! time 2026-12-06T22:00:00Z
//! checkpoint <origin> <size> <base64 root>
//! …
//!
//! — <name> <signature by the old key>
//! — <name> <signature by the new key>
//! ```
//!
//! A checkpoint signed by an older key is believed only through the chain
//! of hand-overs from the configured key back: each signed by both keys,
//! so neither key alone can make one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use entity::key_handover;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QueryOrder};

use super::merkle::Hash;
use super::note::{self, NoteError, NoteSigner};

/// The first line of every hand-over.
pub const HEADER: &str = "rollcall evidence key hand-over";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandoverError {
    #[error("not a hand-over: {0}")]
    Malformed(String),
    #[error("the hand-over is not signed by the {which} key: {source}")]
    NotSigned {
        which: &'static str,
        source: NoteError,
    },
    #[error("two hand-overs name the same key {0}: the chain of keys forks")]
    Fork(String),
}

/// The last checkpoint of one log the retiring key signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// What a hand-over says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub old_key: String,
    pub new_key: String,
    pub at: DateTime<Utc>,
    pub checkpoints: Vec<Covered>,
}

impl Handover {
    /// The note's text (what both keys sign).
    pub fn text(&self) -> String {
        let mut text = format!(
            "{HEADER}\nold {}\nnew {}\ntime {}\n",
            self.old_key,
            self.new_key,
            self.at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        for c in &self.checkpoints {
            text.push_str(&format!(
                "checkpoint {} {} {}\n",
                c.origin,
                c.size,
                STANDARD.encode(c.root)
            ));
        }
        text
    }

    /// Reads a hand-over's text (its signatures are not checked here).
    pub fn parse(text: &str) -> Result<Handover, HandoverError> {
        let bad = |what: &str| HandoverError::Malformed(what.to_owned());
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad("the first line is not the hand-over header"));
        }
        let mut field = |tag: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(tag))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("no `{tag}` line")))
        };
        let old_key = field("old")?;
        let new_key = field("new")?;
        let at = DateTime::parse_from_rfc3339(&field("time")?)
            .map_err(|_| bad("the time is not RFC 3339"))?
            .with_timezone(&Utc);
        let mut checkpoints = Vec::new();
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            let [tag, origin, size, root] = parts[..] else {
                return Err(bad(
                    "a checkpoint line is not `checkpoint <origin> <size> <root>`",
                ));
            };
            let root = STANDARD
                .decode(root)
                .ok()
                .and_then(|b| Hash::try_from(b.as_slice()).ok());
            match (tag, size.parse::<u64>(), root) {
                ("checkpoint", Ok(size), Some(root)) => checkpoints.push(Covered {
                    origin: origin.to_owned(),
                    size,
                    root,
                }),
                _ => {
                    return Err(bad(
                        "a checkpoint line is not `checkpoint <origin> <size> <root>`",
                    ));
                }
            }
        }
        for key in [&old_key, &new_key] {
            note::check_verifier_key(key)
                .map_err(|e| bad(&format!("the key {key} is not a verifier key: {e}")))?;
        }
        if old_key == new_key {
            return Err(bad("the old and the new key are the same"));
        }
        Ok(Handover {
            old_key,
            new_key,
            at,
            checkpoints,
        })
    }

    /// The signed note: the text signed by `old`, then by `new`.
    pub fn sign(&self, old: &NoteSigner, new: &NoteSigner) -> Result<String, NoteError> {
        let text = self.text();
        let by_old = old.sign(&text)?;
        let by_new = new.sign(&text)?;
        Ok(format!("{by_old}{}", &by_new[text.len() + 1..]))
    }

    /// Reads a signed hand-over and checks both its signatures.
    pub fn verify(signed: &str) -> Result<Handover, HandoverError> {
        let split = signed
            .rfind("\n\n")
            .ok_or_else(|| HandoverError::Malformed("no signatures".into()))?;
        let handover = Handover::parse(&signed[..=split])?;
        for (which, key) in [("old", &handover.old_key), ("new", &handover.new_key)] {
            note::verify(signed, key)
                .map_err(|source| HandoverError::NotSigned { which, source })?;
        }
        Ok(handover)
    }

    /// The last checkpoint the old key signed of the log `origin`.
    pub fn covered(&self, origin: &str) -> Option<&Covered> {
        self.checkpoints.iter().find(|c| c.origin == origin)
    }
}

/// The keys a checkpoint may be signed by, from the configured key back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChain {
    /// The configured key.
    pub current: String,
    /// The hand-overs, newest first: `links[0].new_key` is `current`, and
    /// each one's old key is the next one's new key.
    pub links: Vec<Link>,
}

/// One hand-over of the chain, checked, with its note as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub handover: Handover,
    pub note: String,
}

impl KeyChain {
    /// Every key of the chain, the configured one first.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.current.as_str())
            .chain(self.links.iter().map(|l| l.handover.old_key.as_str()))
    }

    /// The key of the chain that signed `signed` (a note), if one did.
    pub fn signer_of(&self, signed: &str) -> Option<&str> {
        self.keys().find(|k| note::verify(signed, k).is_ok())
    }

    /// The hand-over that retired `key`, if `key` is an older key of the chain.
    pub fn retiring(&self, key: &str) -> Option<&Handover> {
        self.links
            .iter()
            .map(|l| &l.handover)
            .find(|h| h.old_key == key)
    }

    /// The hand-overs' notes, oldest first, one after another (the
    /// package's `handovers.txt`).
    pub fn notes(&self) -> String {
        self.links.iter().rev().map(|l| l.note.as_str()).collect()
    }
}

/// Walks the stored hand-overs from `current` back. Hand-overs off the
/// chain are ignored here (`rollcall evidence verify` reports broken ones);
/// a broken hand-over on the chain ends it, and two naming the same new key
/// are an error.
pub fn chain_from(
    current: &str,
    stored: &[key_handover::Model],
) -> Result<KeyChain, HandoverError> {
    let mut links = Vec::new();
    let mut key = current.to_owned();
    loop {
        let mut to = stored.iter().filter(|h| h.new_key == key);
        let Some(row) = to.next() else { break };
        if to.next().is_some() {
            return Err(HandoverError::Fork(key));
        }
        let handover = Handover::verify(&row.note)?;
        if handover.new_key != row.new_key || handover.old_key != row.old_key {
            return Err(HandoverError::Malformed(format!(
                "the stored hand-over to {key} names other keys than its note"
            )));
        }
        // A loop would be a key handed over to itself through others.
        if handover.old_key == current
            || links
                .iter()
                .any(|l: &Link| l.handover.old_key == handover.old_key)
        {
            return Err(HandoverError::Fork(handover.old_key));
        }
        key = handover.old_key.clone();
        links.push(Link {
            handover,
            note: row.note.clone(),
        });
    }
    Ok(KeyChain {
        current: current.to_owned(),
        links,
    })
}

/// Every stored hand-over, oldest first.
pub async fn stored<C: ConnectionTrait>(conn: &C) -> Result<Vec<key_handover::Model>, DbErr> {
    key_handover::Entity::find()
        .order_by_asc(key_handover::Column::Id)
        .all(conn)
        .await
}

/// The chain of keys from `current` back, from the database.
pub async fn chain<C: ConnectionTrait>(conn: &C, current: &str) -> Result<KeyChain, DbErr> {
    chain_from(current, &stored(conn).await?)
        .map_err(|e| DbErr::Custom(format!("evidence key hand-overs: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(old: &NoteSigner, new: &NoteSigner) -> Handover {
        Handover {
            old_key: old.verifier_key(),
            new_key: new.verifier_key(),
            at: DateTime::UNIX_EPOCH,
            checkpoints: vec![Covered {
                origin: "rollcall/acme".into(),
                size: 12,
                root: [7; 32],
            }],
        }
    }

    #[test]
    fn a_handover_is_signed_by_both_keys_and_read_back() {
        let old = NoteSigner::from_seed("rollcall", &[1; 32]).unwrap();
        let new = NoteSigner::from_seed("rollcall", &[2; 32]).unwrap();
        let h = sample(&old, &new);
        let signed = h.sign(&old, &new).unwrap();
        assert!(signed.starts_with(&format!("{HEADER}\nold ")));
        assert_eq!(signed.matches("\n\u{2014} rollcall ").count(), 2);
        assert_eq!(Handover::verify(&signed).unwrap(), h);
        assert_eq!(Handover::parse(&h.text()).unwrap(), h);
    }

    #[test]
    fn a_handover_missing_a_signature_or_changed_is_refused() {
        let old = NoteSigner::from_seed("rollcall", &[1; 32]).unwrap();
        let new = NoteSigner::from_seed("rollcall", &[2; 32]).unwrap();
        let h = sample(&old, &new);
        let only_old = old.sign(&h.text()).unwrap();
        assert!(matches!(
            Handover::verify(&only_old),
            Err(HandoverError::NotSigned { which: "new", .. })
        ));
        let only_new = new.sign(&h.text()).unwrap();
        assert!(matches!(
            Handover::verify(&only_new),
            Err(HandoverError::NotSigned { which: "old", .. })
        ));
        let changed = h.sign(&old, &new).unwrap().replace(" 12 ", " 13 ");
        assert!(Handover::verify(&changed).is_err());
    }

    #[test]
    fn the_chain_runs_from_the_current_key_back() {
        let k: Vec<NoteSigner> = (1..=3)
            .map(|i| NoteSigner::from_seed("rollcall", &[i; 32]).unwrap())
            .collect();
        let row = |id: i64, old: &NoteSigner, new: &NoteSigner| key_handover::Model {
            id,
            old_key: old.verifier_key(),
            new_key: new.verifier_key(),
            note: sample(old, new).sign(old, new).unwrap(),
            created_at: DateTime::UNIX_EPOCH,
        };
        let stored = vec![row(1, &k[0], &k[1]), row(2, &k[1], &k[2])];
        let chain = chain_from(&k[2].verifier_key(), &stored).unwrap();
        let keys: Vec<&str> = chain.keys().collect();
        let want: Vec<String> = k.iter().rev().map(|s| s.verifier_key()).collect();
        assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(chain.notes().starts_with(&stored[0].note));
        // From the middle key, only the older hand-over is on the chain.
        assert_eq!(
            chain_from(&k[1].verifier_key(), &stored)
                .unwrap()
                .links
                .len(),
            1
        );
    }
}
