//! Requests that outlive the hook that made them.
//!
//! An agent's hook may only wait so long. When a reviewer has not decided
//! by then, the hook blocks the call and leaves the request open on the
//! bot; this store remembers it, so that the agent's retry of the same
//! command (same session, same working directory, same command) finds the
//! request again instead of making a new one, and uses its decision once.
//!
//! Each held request is one file, named by a hash of session, directory and
//! command, in a directory only this user can enter (0700; files 0600). It
//! holds the request as submitted and the salt of its command hash, so a
//! retry can prove it is the same command. A retry *claims* the file by
//! renaming it: of two retries at once, one gets the request, the other
//! makes a new one. A claimed approval is deleted before the command runs.
//!
//! Nothing here decides anything: a missing, unreadable or foreign file is
//! simply not found, and the caller asks the bot as for a new command.

use holdpoint_shared::protocol::ReviewRequest;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no directory for held requests: set HOLDPOINT_STATE_DIR, XDG_STATE_HOME or HOME")]
    NoDirectory,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not private to this user (mode {1:o}); fix it with chmod 700")]
    NotPrivate(PathBuf, u32),
    #[error("cannot encode the held request: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What identifies "the same command": the agent's session, the working
/// directory and the exact command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub session: String,
    pub cwd: String,
    pub line: String,
}

impl Key {
    /// The file name: hex SHA-256 over the three parts, each length-prefixed.
    fn file_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&self.session, &self.cwd, &self.line] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        format!("{}.json", hex::encode(h.finalize()))
    }
}

/// One held request, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    pub session: String,
    pub cwd: String,
    /// The salt of `request.command_hash`: the retry recomputes the hash
    /// from its own command and must find the same one.
    pub salt: String,
    pub request: ReviewRequest,
}

/// The directory of held requests.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A held request taken out of the store by one process.
#[derive(Debug)]
pub struct Claimed {
    pub held: Held,
    claimed: PathBuf,
    home: PathBuf,
}

impl Store {
    /// `HOLDPOINT_STATE_DIR`, else `$XDG_STATE_HOME/holdpoint/held`, else
    /// `~/.local/state/holdpoint/held`.
    pub fn from_env() -> Result<Store, StoreError> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let dir = if let Some(d) = var("HOLDPOINT_STATE_DIR") {
            PathBuf::from(d)
        } else if let Some(s) = var("XDG_STATE_HOME") {
            PathBuf::from(s).join("holdpoint").join("held")
        } else if let Some(h) = var("HOME") {
            PathBuf::from(h).join(".local/state/holdpoint/held")
        } else {
            return Err(StoreError::NoDirectory);
        };
        Ok(Store { dir })
    }

    /// A store in `dir` (tests).
    pub fn at(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The directory, created 0700 if missing; refused if others can enter it.
    fn ready(&self) -> Result<&Path, StoreError> {
        let d = &self.dir;
        if !d.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(io(d))?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(io(d))?;
        }
        let mode = fs::metadata(d).map_err(io(d))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::NotPrivate(d.clone(), mode));
        }
        Ok(d)
    }

    /// Keeps `held` for a later retry of the same command (replacing an
    /// older one for the same key).
    pub fn put(&self, held: &Held, line: &str) -> Result<(), StoreError> {
        let dir = self.ready()?;
        let key = Key {
            session: held.session.clone(),
            cwd: held.cwd.clone(),
            line: line.to_string(),
        };
        let path = dir.join(key.file_name());
        let tmp = dir.join(format!(".{}.{}.tmp", key.file_name(), std::process::id()));
        let body = serde_json::to_vec(held)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }

    /// Takes the held request for `key`, if there is one and it really is
    /// for this command; `None` otherwise (including when another retry
    /// claimed it first).
    pub fn claim(&self, key: &Key, hash: impl Fn(&str) -> String) -> Option<Claimed> {
        let dir = self.ready().ok()?;
        let home = dir.join(key.file_name());
        let claimed = dir.join(format!(
            ".{}.claimed.{}",
            key.file_name(),
            std::process::id()
        ));
        fs::rename(&home, &claimed).ok()?;
        let held = fs::read(&claimed)
            .ok()
            .and_then(|b| serde_json::from_slice::<Held>(&b).ok())
            .filter(|h| {
                h.session == key.session
                    && h.cwd == key.cwd
                    && h.request.cwd == key.cwd
                    && h.request.command_hash == hash(&h.salt)
            });
        match held {
            Some(held) => Some(Claimed {
                held,
                claimed,
                home,
            }),
            None => {
                let _ = fs::remove_file(&claimed);
                None
            }
        }
    }
}

impl Claimed {
    /// The request is decided (or gone): it is never used again.
    pub fn consume(self) -> Result<(), StoreError> {
        fs::remove_file(&self.claimed).map_err(io(&self.claimed))
    }

    /// Still undecided: back in the store for the next retry.
    pub fn release(self) {
        if fs::rename(&self.claimed, &self.home).is_err() {
            let _ = fs::remove_file(&self.claimed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdpoint_shared::Verdict;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("holdpoint-pending-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn held(hash: &str) -> Held {
        Held {
            session: "s".into(),
            cwd: "/w".into(),
            salt: "salt".into(),
            request: ReviewRequest {
                id: "0".repeat(32),
                command: "git push --force".into(),
                command_hash: hash.into(),
                verdict: Verdict::from_hits(vec![]),
                annotations: vec![],
                host: "h".into(),
                cwd: "/w".into(),
                agent: None,
                session: Some("s".into()),
                front_end: "hook".into(),
                requested_by: None,
            },
        }
    }

    fn key(line: &str) -> Key {
        Key {
            session: "s".into(),
            cwd: "/w".into(),
            line: line.into(),
        }
    }

    #[test]
    fn a_held_request_is_claimed_once_and_is_private() {
        let dir = scratch("once");
        let store = Store::at(dir.join("held"));
        store.put(&held("h1"), "git push --force").unwrap();
        let mode = fs::metadata(dir.join("held")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let hash = |salt: &str| if salt == "salt" { "h1" } else { "x" }.to_string();
        let first = store.claim(&key("git push --force"), hash).expect("found");
        let file = &first.claimed;
        assert_eq!(
            fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            store.claim(&key("git push --force"), hash).is_none(),
            "claimed once"
        );
        first.release();
        let again = store
            .claim(&key("git push --force"), hash)
            .expect("released");
        again.consume().unwrap();
        assert!(
            store.claim(&key("git push --force"), hash).is_none(),
            "consumed"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn another_command_session_or_hash_finds_nothing() {
        let dir = scratch("other");
        let store = Store::at(dir.join("held"));
        store.put(&held("h1"), "git push --force").unwrap();
        let ok = |_: &str| "h1".to_string();
        assert!(store.claim(&key("git push -f"), ok).is_none());
        let other_session = Key {
            session: "t".into(),
            ..key("git push --force")
        };
        assert!(store.claim(&other_session, ok).is_none());
        // A file whose hash does not match this command is dropped.
        assert!(
            store
                .claim(&key("git push --force"), |_| "h2".into())
                .is_none()
        );
        assert!(store.claim(&key("git push --force"), ok).is_none());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_others_can_enter_is_refused() {
        let dir = scratch("open");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let store = Store::at(&dir);
        assert!(matches!(
            store.put(&held("h1"), "x"),
            Err(StoreError::NotPrivate(..))
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
