//! The witness: this server's copy, outside the database, of the last
//! checkpoint it signed or verified for each tenant, with the tree's
//! frontier at that size. A checkpoint is signed only by extending that
//! frontier with the leaves appended since, re-hashed from their content,
//! so rewriting the database (leaves, its head, or its checkpoints) can
//! never get a tree signed that is not an append-only extension of what was
//! signed before.
//!
//! One JSON file per tenant in a folder beside the signing key
//! (`{key_file}.witness/{tenant}.json` unless `evidence.witness_dir` says
//! otherwise), replaced atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::merkle::{Frontier, Hash, parse_hash};
use crate::outbox::render::hex;

#[derive(Debug, thiserror::Error)]
#[error("witness file {path}: {reason}")]
pub struct WitnessError {
    pub path: String,
    pub reason: String,
}

/// What the witness holds about one tenant's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witnessed {
    pub origin: String,
    pub size: u64,
    /// Hex of the root at `size`.
    pub root: String,
    /// Hex of the frontier's peaks, largest subtree first.
    pub frontier: Vec<String>,
    /// The signed note of the checkpoint at `size`, as in the database.
    pub note: String,
    /// When this server signed it, or found it signed and consistent.
    pub witnessed_at: DateTime<Utc>,
}

impl Witnessed {
    pub fn new(origin: &str, frontier: &Frontier, note: &str, at: DateTime<Utc>) -> Witnessed {
        Witnessed {
            origin: origin.to_owned(),
            size: frontier.size(),
            root: hex(&frontier.root()),
            frontier: frontier.peak_hashes().map(|h| hex(h)).collect(),
            note: note.to_owned(),
            witnessed_at: at,
        }
    }

    /// The frontier it holds, checked against its root.
    pub fn frontier(&self) -> Option<Frontier> {
        let hashes = self
            .frontier
            .iter()
            .map(|h| parse_hash(h))
            .collect::<Option<Vec<Hash>>>()?;
        Frontier::from_peaks(self.size, &hashes).filter(|f| hex(&f.root()) == self.root)
    }
}

/// The folder of witness files.
#[derive(Debug, Clone)]
pub struct Witness {
    dir: PathBuf,
}

impl Witness {
    pub fn new(dir: impl Into<PathBuf>) -> Witness {
        Witness { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `tenant`, whose id must be one configuration allows
    /// (letters, digits, `-`, `_`): anything else is never a file name here.
    fn path(&self, tenant: &str) -> Result<PathBuf, WitnessError> {
        if !crate::config::is_tenant_id(tenant) {
            return Err(WitnessError {
                path: self.dir.display().to_string(),
                reason: format!("`{tenant}` is not a tenant id"),
            });
        }
        Ok(self.dir.join(format!("{tenant}.json")))
    }

    fn error(&self, tenant: &str, reason: impl Into<String>) -> WitnessError {
        WitnessError {
            path: self
                .dir
                .join(format!("{tenant}.json"))
                .display()
                .to_string(),
            reason: reason.into(),
        }
    }

    /// What is witnessed for `tenant`; `None` when nothing is yet. A file
    /// that cannot be read or parsed is an error, never "nothing".
    pub fn read(&self, tenant: &str) -> Result<Option<Witnessed>, WitnessError> {
        let path = self.path(tenant)?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.error(tenant, format!("is not a witness record: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(tenant, e.to_string())),
        }
    }

    /// Renames `tenant`'s file to `{tenant}.json.{suffix}` (kept, never
    /// deleted: it proves what was signed), so that the next checkpoint
    /// starts a new witness. Returns the new name.
    pub fn set_aside(&self, tenant: &str, suffix: &str) -> Result<PathBuf, WitnessError> {
        let path = self.path(tenant)?;
        let to = self.dir.join(format!("{tenant}.json.{suffix}"));
        // A link, then the old name removed: never over a file kept before.
        std::fs::hard_link(&path, &to)
            .and_then(|()| std::fs::remove_file(&path))
            .map_err(|e| self.error(tenant, e.to_string()))?;
        Ok(to)
    }

    /// The tenants with a witness file here.
    pub fn tenants(&self) -> Result<Vec<String>, WitnessError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(WitnessError {
                    path: self.dir.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let mut tenants: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let tenant = name.strip_suffix(".json")?;
                crate::config::is_tenant_id(tenant).then(|| tenant.to_owned())
            })
            .collect();
        tenants.sort();
        Ok(tenants)
    }

    /// Records `record` for `tenant`, unless the file already holds a
    /// larger checkpoint (another process on this host signed further).
    /// Writers of one tenant's file take turns (an exclusive lock on
    /// `.{tenant}.lock` beside it), so a slower one never steps the record
    /// back between another's check and write.
    pub fn write(&self, tenant: &str, record: &Witnessed) -> Result<(), WitnessError> {
        let path = self.path(tenant)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| self.error(tenant, e.to_string()))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!(".{tenant}.lock")))
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| self.error(tenant, format!("cannot lock: {e}")))?;
        let written = self.write_locked(tenant, &path, record);
        drop(lock);
        written
    }

    fn write_locked(
        &self,
        tenant: &str,
        path: &Path,
        record: &Witnessed,
    ) -> Result<(), WitnessError> {
        if let Some(held) = self.read(tenant)?
            && held.origin == record.origin
            && held.size > record.size
        {
            return Ok(());
        }
        let mut text =
            serde_json::to_vec_pretty(record).map_err(|e| self.error(tenant, e.to_string()))?;
        text.push(b'\n');
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{tenant}"))
            .tempfile_in(&self.dir)
            .map_err(|e| self.error(tenant, e.to_string()))?;
        tmp.write_all(&text)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| self.error(tenant, e.to_string()))?;
        tmp.persist(path)
            .map_err(|e| self.error(tenant, e.error.to_string()))?;
        // The rename is durable once the folder is.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.error(tenant, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::merkle::leaf_hash;

    fn frontier(n: u8) -> Frontier {
        let mut f = Frontier::default();
        for i in 0..n {
            f.push(leaf_hash(&[i]));
        }
        f
    }

    #[test]
    fn a_record_is_written_read_back_and_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let w = Witness::new(dir.path().join("w"));
        assert_eq!(w.read("acme").unwrap(), None);
        let at = DateTime::UNIX_EPOCH;
        let five = Witnessed::new("rollcall/acme", &frontier(5), "note five\n", at);
        w.write("acme", &five).unwrap();
        let back = w.read("acme").unwrap().unwrap();
        assert_eq!(back, five);
        assert_eq!(back.frontier().unwrap(), frontier(5));
        // A smaller checkpoint written later (a slower process) is ignored.
        let three = Witnessed::new("rollcall/acme", &frontier(3), "note three\n", at);
        w.write("acme", &three).unwrap();
        assert_eq!(w.read("acme").unwrap().unwrap().size, 5);
        let seven = Witnessed::new("rollcall/acme", &frontier(7), "note seven\n", at);
        w.write("acme", &seven).unwrap();
        assert_eq!(w.read("acme").unwrap().unwrap().size, 7);
    }

    #[test]
    fn writers_racing_never_step_the_record_back() {
        let dir = tempfile::tempdir().unwrap();
        let w = std::sync::Arc::new(Witness::new(dir.path().join("w")));
        let at = DateTime::UNIX_EPOCH;
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    // Each writer goes up on its own sizes (t+1, t+9, …);
                    // only the last writer ever reaches 200.
                    for i in 0..25u32 {
                        let n = u8::try_from(8 * i + t + 1).unwrap();
                        let r = Witnessed::new("rollcall/acme", &frontier(n), "note\n", at);
                        w.write("acme", &r).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.read("acme").unwrap().unwrap().size, 200);
    }

    #[test]
    fn a_frontier_that_does_not_give_its_root_is_refused() {
        let mut record = Witnessed::new("o", &frontier(6), "n\n", DateTime::UNIX_EPOCH);
        record.root = hex(&frontier(5).root());
        assert_eq!(record.frontier(), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acme.json"), "{").unwrap();
        let err = Witness::new(dir.path()).read("acme").unwrap_err();
        assert!(err.to_string().contains("is not a witness record"), "{err}");
        // A tenant id that would be a path elsewhere is refused.
        for bad in ["../x", "/tmp/x", ""] {
            let err = Witness::new(dir.path()).read(bad).unwrap_err();
            assert!(err.to_string().contains("is not a tenant id"), "{err}");
        }
    }
}
