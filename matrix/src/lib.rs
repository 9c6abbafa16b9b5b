//! holdpoint's Matrix client: the one place that calls matrix-sdk.
//!
//! It logs in once (user id and password, or an access token and device id)
//! and keeps the session in `session.json` beside the SQLite state and crypto
//! store, so a restart restores the same device and still decrypts. It sends
//! message contents the caller built (JSON, so the caller decides every field,
//! `m.mentions` included), resolves and joins rooms, reads power levels and
//! hands reactions and replies from other users to the caller as neutral
//! [`Incoming`] values. It knows nothing about requests: the bot's Matrix
//! adapter turns those into intents.
//!
//! The API is small and not generic, so that matrix-sdk is compiled here
//! once and an edit to the bot only relinks it.

use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::{RequestConfig, SyncSettings};
use matrix_sdk::deserialized_responses::{EncryptionInfo, VerificationState};
use matrix_sdk::event_handler::RawEvent;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::reaction::OriginalSyncReactionEvent;
use matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent;
use matrix_sdk::ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomOrAliasId};
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::{Client, Room, SessionMeta, SessionTokens};
use serde_json::Value;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;

/// The name of the file that holds the login session in the data directory.
pub const SESSION_FILE: &str = "session.json";
/// The directory of the SQLite state and crypto store in the data directory.
pub const STORE_DIR: &str = "store";

/// Why a Matrix operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the stored session {path} cannot be read: {message}")]
    Session { path: PathBuf, message: String },
    #[error("{0} is not a valid Matrix id")]
    BadId(String),
    // Boxed: matrix-sdk's errors are large.
    #[error("the homeserver refused: {0}")]
    Sdk(Box<matrix_sdk::Error>),
    #[error("the homeserver refused: {0}")]
    Http(Box<matrix_sdk::HttpError>),
    #[error("cannot reach the homeserver: {0}")]
    Build(Box<matrix_sdk::ClientBuildError>),
    #[error("the bot is not in room {0}")]
    NotInRoom(String),
    #[error("the homeserver answered without an event id")]
    NoEventId,
    #[error("secret storage: {0}")]
    Recovery(Box<matrix_sdk::encryption::recovery::RecoveryError>),
}

impl From<matrix_sdk::encryption::recovery::RecoveryError> for MatrixError {
    fn from(e: matrix_sdk::encryption::recovery::RecoveryError) -> MatrixError {
        MatrixError::Recovery(Box::new(e))
    }
}

/// A PNG image to send.
pub struct Image<'a> {
    pub name: &'a str,
    pub png: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// What it shows, in words (the caption).
    pub alt: &'a str,
}

/// What [`Matrix::set_up_recovery`] did with secret storage (where the
/// bot's cross-signing keys and room-key backup are kept, encrypted with a
/// recovery key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// There was none: it was created, with this recovery key, which is
    /// shown to nobody else and never again.
    Created(String),
    /// There was none: it was created, protected by the passphrase given.
    Passphrase,
    /// It exists already.
    Existing,
}

impl From<matrix_sdk::Error> for MatrixError {
    fn from(e: matrix_sdk::Error) -> MatrixError {
        MatrixError::Sdk(Box::new(e))
    }
}

impl From<matrix_sdk::HttpError> for MatrixError {
    fn from(e: matrix_sdk::HttpError) -> MatrixError {
        MatrixError::Http(Box::new(e))
    }
}

impl From<matrix_sdk::ClientBuildError> for MatrixError {
    fn from(e: matrix_sdk::ClientBuildError) -> MatrixError {
        MatrixError::Build(Box::new(e))
    }
}

/// How the bot logs in.
#[derive(Clone)]
pub struct Login {
    pub homeserver: String,
    pub user_id: String,
    /// Used on the first start only (and for cross-signing's bootstrap).
    pub password: Option<String>,
    /// With `device_id`: an existing session instead of a password login.
    pub access_token: Option<String>,
    pub device_id: Option<String>,
    /// Holds `session.json` and the store.
    pub data_dir: PathBuf,
    /// The new device's display name.
    pub device_name: String,
}

/// Something another user did in a room the bot is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub room_id: String,
    pub event_id: String,
    pub sender: String,
    /// `None` in a room without encryption (or for an event sent in clear
    /// text there, as reactions may be); `Some(true)` when the event was
    /// encrypted by a device its sender cross-signed and the bot trusts.
    pub verified: Option<bool>,
    pub kind: Kind,
}

/// What an [`Incoming`] event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An `m.annotation` on `target`.
    Reaction { target: String, key: String },
    /// A text message in the thread of `root`, or a reply to `root`.
    Reply { root: String, body: String },
}

/// A logged-in bot.
#[derive(Clone)]
pub struct Matrix {
    client: Client,
    me: OwnedUserId,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MatrixError + '_ {
    move |source| MatrixError::DataDir {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` readable by its owner only, replacing it whole.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), MatrixError> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

impl Matrix {
    /// Restores the stored session, or logs in and stores it.
    async fn connect_inner(login: &Login) -> Result<Matrix, MatrixError> {
        let dir = &login.data_dir;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(dir))?;
        }
        let client = Client::builder()
            .homeserver_url(&login.homeserver)
            .sqlite_store(dir.join(STORE_DIR), None)
            // matrix-sdk waits out M_LIMIT_EXCEEDED's retry_after_ms and
            // retries failed requests with backoff, within this budget.
            .request_config(
                RequestConfig::new()
                    .retry_limit(4)
                    .timeout(Duration::from_secs(20)),
            )
            .build()
            .await?;
        let session_path = dir.join(SESSION_FILE);
        let me = OwnedUserId::try_from(login.user_id.as_str())
            .map_err(|_| MatrixError::BadId(login.user_id.clone()))?;
        if session_path.exists() {
            let text = std::fs::read_to_string(&session_path).map_err(io_err(&session_path))?;
            let session: MatrixSession =
                serde_json::from_str(&text).map_err(|e| MatrixError::Session {
                    path: session_path.clone(),
                    message: e.to_string(),
                })?;
            if session.meta.user_id != me {
                return Err(MatrixError::Session {
                    path: session_path,
                    message: format!(
                        "it belongs to {}, not to {me}; move it away to log in again",
                        session.meta.user_id
                    ),
                });
            }
            client
                .matrix_auth()
                .restore_session(session, RoomLoadSettings::default())
                .await?;
        } else {
            match (&login.access_token, &login.device_id, &login.password) {
                (Some(token), Some(device), _) => {
                    let session = MatrixSession {
                        meta: SessionMeta {
                            user_id: me.clone(),
                            device_id: OwnedDeviceId::from(device.as_str()),
                        },
                        tokens: SessionTokens {
                            access_token: token.clone(),
                            refresh_token: None,
                        },
                    };
                    client
                        .matrix_auth()
                        .restore_session(session, RoomLoadSettings::default())
                        .await?;
                }
                (_, _, Some(password)) => {
                    client
                        .matrix_auth()
                        .login_username(&me, password)
                        .initial_device_display_name(&login.device_name)
                        .send()
                        .await?;
                }
                _ => {
                    return Err(MatrixError::Session {
                        path: session_path,
                        message: "there is none yet, and neither a password nor an access token with its device id is configured".into(),
                    });
                }
            }
            if let Some(session) = client.matrix_auth().session() {
                let text =
                    serde_json::to_vec_pretty(&session).map_err(|e| MatrixError::Session {
                        path: session_path.clone(),
                        message: e.to_string(),
                    })?;
                write_private(&session_path, &text)?;
            }
        }
        Ok(Matrix { client, me })
    }

    /// The bot's user id.
    pub fn user_id(&self) -> String {
        self.me.to_string()
    }

    /// The bot's device id.
    pub fn device_id(&self) -> Option<String> {
        self.client.device_id().map(|d| d.to_string())
    }

    /// The device's Ed25519 fingerprint, for a reviewer to compare when
    /// verifying it by hand.
    async fn fingerprint_inner(&self) -> Option<String> {
        let device = self.client.encryption().get_own_device().await.ok()??;
        device.ed25519_key().map(|k| k.to_base64())
    }

    /// Creates the bot's cross-signing identity if it has none, signing
    /// this device with it, so clients that only send room keys to
    /// cross-signed devices include the bot. The homeserver asks for the
    /// password again (user-interactive auth) when it is configured.
    async fn bootstrap_cross_signing_inner(
        &self,
        password: Option<&str>,
    ) -> Result<(), MatrixError> {
        let enc = self.client.encryption();
        match enc.bootstrap_cross_signing_if_needed(None).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let Some(password) = password else {
                    return Err(e.into());
                };
                if e.as_uiaa_response().is_none() {
                    return Err(e.into());
                }
                let mut pw =
                    uiaa::Password::new(uiaa::UserIdentifier::from(&self.me), password.to_string());
                if let Some(info) = e.as_uiaa_response() {
                    pw.session = info.session.clone();
                }
                enc.bootstrap_cross_signing(Some(uiaa::AuthData::Password(pw)))
                    .await
                    .map_err(MatrixError::from)
            }
        }
    }

    async fn restore_identity_inner(&self, key: &str) -> Result<bool, MatrixError> {
        let enc = self.client.encryption();
        if !enc.secret_storage().is_enabled().await? {
            return Ok(false);
        }
        enc.recovery().recover(key).await?;
        Ok(true)
    }

    async fn set_up_recovery_inner(
        &self,
        passphrase: Option<&str>,
    ) -> Result<Recovery, MatrixError> {
        let enc = self.client.encryption();
        if enc.secret_storage().is_enabled().await? {
            return Ok(Recovery::Existing);
        }
        let recovery = enc.recovery();
        let enable = recovery.enable();
        match passphrase {
            Some(p) => {
                enable.with_passphrase(p).await?;
                Ok(Recovery::Passphrase)
            }
            None => Ok(Recovery::Created(enable.await?)),
        }
    }

    /// Syncs once, so the rooms and members the bot is in are known.
    async fn sync_once_inner(&self) -> Result<(), MatrixError> {
        self.client
            .sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
            .await?;
        Ok(())
    }

    /// Joins a room by id or alias (a no-op when already joined) and
    /// returns its id.
    async fn join_inner(&self, room: &str) -> Result<String, MatrixError> {
        let id = <&RoomOrAliasId>::try_from(room).map_err(|_| MatrixError::BadId(room.into()))?;
        let joined = self.client.join_room_by_id_or_alias(id, &[]).await?;
        Ok(joined.room_id().to_string())
    }

    /// The direct-message room with `user`: the first existing one, else
    /// a new one (encrypted, the user invited).
    async fn direct_room_inner(&self, user: &str) -> Result<String, MatrixError> {
        let id = OwnedUserId::try_from(user).map_err(|_| MatrixError::BadId(user.into()))?;
        if let Some(room) = self.client.get_dm_room(&id) {
            return Ok(room.room_id().to_string());
        }
        let room = self.client.create_dm(&id).await?;
        Ok(room.room_id().to_string())
    }

    async fn send_image_inner(
        &self,
        room_id: &str,
        image: &Image<'_>,
    ) -> Result<String, MatrixError> {
        use matrix_sdk::attachment::{AttachmentConfig, AttachmentInfo, BaseImageInfo};
        use matrix_sdk::ruma::UInt;
        use matrix_sdk::ruma::events::room::message::TextMessageEventContent;
        let room = self.room(room_id)?;
        let info = AttachmentInfo::Image(BaseImageInfo {
            width: Some(UInt::from(image.width)),
            height: Some(UInt::from(image.height)),
            size: UInt::new(image.png.len() as u64),
            ..Default::default()
        });
        let config = AttachmentConfig::new()
            .info(info)
            .caption(Some(TextMessageEventContent::plain(image.alt)));
        let sent = room
            .send_attachment(image.name, &mime::IMAGE_PNG, image.png.to_vec(), config)
            .await?;
        Ok(sent.event_id.to_string())
    }

    fn room(&self, room_id: &str) -> Result<Room, MatrixError> {
        let id = OwnedRoomId::try_from(room_id).map_err(|_| MatrixError::BadId(room_id.into()))?;
        self.client
            .get_room(&id)
            .ok_or_else(|| MatrixError::NotInRoom(room_id.into()))
    }

    /// Whether a room is end-to-end encrypted.
    async fn is_encrypted_inner(&self, room_id: &str) -> Result<bool, MatrixError> {
        let room = self.room(room_id)?;
        Ok(room.latest_encryption_state().await?.is_encrypted())
    }

    /// Sends an event of `event_type` with exactly this content (encrypted
    /// when the room is); returns its event id.
    async fn send_inner(
        &self,
        room_id: &str,
        event_type: &str,
        content: &Value,
    ) -> Result<String, MatrixError> {
        let room = self.room(room_id)?;
        let r = room.send_raw(event_type, content.clone()).await?;
        Ok(r.response.event_id.to_string())
    }

    /// The power level of `user` in a room; `None` for a room creator's
    /// unlimited level (room version 12), which passes every threshold.
    async fn power_level_inner(
        &self,
        room_id: &str,
        user: &str,
    ) -> Result<Option<i64>, MatrixError> {
        use matrix_sdk::ruma::events::room::power_levels::UserPowerLevel;
        let room = self.room(room_id)?;
        let uid = OwnedUserId::try_from(user).map_err(|_| MatrixError::BadId(user.into()))?;
        Ok(match room.get_user_power_level(&uid).await? {
            UserPowerLevel::Infinite => None,
            UserPowerLevel::Int(n) => Some(i64::from(n)),
            _ => Some(0),
        })
    }

    /// Follows the sync stream until it fails, handing every reaction and
    /// reply of another user to `tx`. The store keeps the sync position, so
    /// after a restart what happened meanwhile arrives first.
    async fn run_inner(&self, tx: mpsc::Sender<Incoming>) -> Result<(), MatrixError> {
        let me = self.me.clone();
        let reactions = tx.clone();
        let me_r = me.clone();
        let on_reaction = self.client.add_event_handler(
            move |ev: OriginalSyncReactionEvent, room: Room, enc: Option<EncryptionInfo>| {
                let tx = reactions.clone();
                let me = me_r.clone();
                async move {
                    if ev.sender == me {
                        return;
                    }
                    let inc = Incoming {
                        room_id: room.room_id().to_string(),
                        event_id: ev.event_id.to_string(),
                        sender: ev.sender.to_string(),
                        verified: enc.as_ref().map(trusted),
                        kind: Kind::Reaction {
                            target: ev.content.relates_to.event_id.to_string(),
                            key: ev.content.relates_to.key.clone(),
                        },
                    };
                    let _ = tx.send(inc).await;
                }
            },
        );
        let replies = tx;
        let on_message = self.client.add_event_handler(
            move |ev: OriginalSyncRoomMessageEvent,
                  room: Room,
                  raw: RawEvent,
                  enc: Option<EncryptionInfo>| {
                let tx = replies.clone();
                let me = me.clone();
                async move {
                    if ev.sender == me {
                        return;
                    }
                    let Ok(json) = serde_json::from_str::<Value>(raw.get()) else {
                        return;
                    };
                    let Some((root, body)) = reply_of(&json) else {
                        return;
                    };
                    let inc = Incoming {
                        room_id: room.room_id().to_string(),
                        event_id: ev.event_id.to_string(),
                        sender: ev.sender.to_string(),
                        verified: enc.as_ref().map(trusted),
                        kind: Kind::Reply { root, body },
                    };
                    let _ = tx.send(inc).await;
                }
            },
        );
        // Our own loop over `sync_once` rather than `Client::sync`, which
        // sleeps a whole second after any sync that returned within a
        // second: every reaction would wait for it, since the bot's own
        // posts make syncs return at once. A homeserver that ignores the
        // timeout is still not hammered: at most one sync per 50 ms.
        let settings = SyncSettings::default().timeout(Duration::from_secs(10));
        let mut last: Option<std::time::Instant> = None;
        loop {
            if let Some(t) = last {
                let gap = Duration::from_millis(50).saturating_sub(t.elapsed());
                if !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
            }
            last = Some(std::time::Instant::now());
            if let Err(e) = self.client.sync_once(settings.clone()).await {
                // The caller runs this again: without these, every event
                // would reach it twice.
                self.client.remove_event_handler(on_reaction);
                self.client.remove_event_handler(on_message);
                return Err(e.into());
            }
        }
    }

    /// Whether `user` is a valid full user id (`@alice:example.org`).
    pub fn is_user_id(user: &str) -> bool {
        OwnedUserId::try_from(user).is_ok()
    }

    /// Whether `event_id` names a valid event id (for the caller's checks).
    pub fn is_event_id(event_id: &str) -> bool {
        OwnedEventId::try_from(event_id).is_ok()
    }
}

/// A future that is `Send`, boxed here so that matrix-sdk's deep futures
/// are checked and compiled in this crate only.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Matrix {
    /// Restores the stored session, or logs in and stores it.
    pub fn connect(login: &Login) -> BoxFuture<'_, Result<Matrix, MatrixError>> {
        Box::pin(Matrix::connect_inner(login))
    }

    /// The device's Ed25519 fingerprint, for a reviewer to compare when
    /// verifying it by hand.
    pub fn fingerprint(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(self.fingerprint_inner())
    }

    /// Creates the bot's cross-signing identity if it has none, signing
    /// this device with it, so clients that only send room keys to
    /// cross-signed devices include the bot. The homeserver asks for the
    /// password again (user-interactive auth) when it is configured.
    pub fn bootstrap_cross_signing<'a>(
        &'a self,
        password: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), MatrixError>> {
        Box::pin(self.bootstrap_cross_signing_inner(password))
    }

    /// Opens the existing secret storage with `key` (a recovery key or
    /// the passphrase it was made with) and imports the bot's
    /// cross-signing identity from it, signing this device with it.
    /// `false`: there is none yet. Call it before
    /// [`Matrix::bootstrap_cross_signing`] on a new device, so that the
    /// identity is restored rather than replaced.
    pub fn restore_identity<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<bool, MatrixError>> {
        Box::pin(self.restore_identity_inner(key))
    }

    /// Creates secret storage (with a key backup) if there is none, and
    /// puts the bot's cross-signing keys in it: protected by `passphrase`
    /// when given, else by a new recovery key that is returned, once.
    pub fn set_up_recovery<'a>(
        &'a self,
        passphrase: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Recovery, MatrixError>> {
        Box::pin(self.set_up_recovery_inner(passphrase))
    }

    /// Syncs once, so the rooms and members the bot is in are known.
    pub fn sync_once(&self) -> BoxFuture<'_, Result<(), MatrixError>> {
        Box::pin(self.sync_once_inner())
    }

    /// Joins a room by id or alias (a no-op when already joined) and
    /// returns its id.
    pub fn join<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<String, MatrixError>> {
        Box::pin(self.join_inner(room))
    }

    /// The direct-message room with `user` (a full user id), created
    /// (encrypted, the user invited) when there is none yet.
    pub fn direct_room<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<String, MatrixError>> {
        Box::pin(self.direct_room_inner(user))
    }

    /// Sends a PNG as an `m.image` (uploaded, and encrypted with the
    /// event when the room is), with its size and a caption that says what
    /// it shows; returns its event id.
    pub fn send_image<'a>(
        &'a self,
        room_id: &'a str,
        image: &'a Image<'a>,
    ) -> BoxFuture<'a, Result<String, MatrixError>> {
        Box::pin(self.send_image_inner(room_id, image))
    }

    /// Whether a room is end-to-end encrypted.
    pub fn is_encrypted<'a>(
        &'a self,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, MatrixError>> {
        Box::pin(self.is_encrypted_inner(room_id))
    }

    /// Sends an event of `event_type` with exactly this content (encrypted
    /// when the room is); returns its event id.
    pub fn send<'a>(
        &'a self,
        room_id: &'a str,
        event_type: &'a str,
        content: &'a Value,
    ) -> BoxFuture<'a, Result<String, MatrixError>> {
        Box::pin(self.send_inner(room_id, event_type, content))
    }

    /// The power level of `user` in a room; `None` for a room creator's
    /// unlimited level (room version 12), which passes every threshold.
    pub fn power_level<'a>(
        &'a self,
        room_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, MatrixError>> {
        Box::pin(self.power_level_inner(room_id, user))
    }

    /// Follows the sync stream until it fails, handing every reaction and
    /// reply of another user to `tx`. The store keeps the sync position, so
    /// after a restart what happened meanwhile arrives first.
    pub fn run(&self, tx: mpsc::Sender<Incoming>) -> BoxFuture<'_, Result<(), MatrixError>> {
        Box::pin(self.run_inner(tx))
    }
}

/// Whether an encrypted event came from a device its sender signed and the
/// bot trusts.
fn trusted(e: &EncryptionInfo) -> bool {
    matches!(e.verification_state, VerificationState::Verified)
}

/// The root and text of a message that answers a root: in its thread
/// (`m.thread`) or as a reply to it (`m.in_reply_to`). The content may be
/// the decrypted one: relations are read from the event's content.
pub fn reply_of(event: &Value) -> Option<(String, String)> {
    let content = event.get("content")?;
    if content.get("msgtype").and_then(Value::as_str) != Some("m.text") {
        return None;
    }
    let body = content.get("body").and_then(Value::as_str)?.to_string();
    let rel = content.get("m.relates_to")?;
    let root = if rel.get("rel_type").and_then(Value::as_str) == Some("m.thread") {
        rel.get("event_id").and_then(Value::as_str)?
    } else if rel.get("rel_type").is_none() {
        rel.get("m.in_reply_to")?
            .get("event_id")
            .and_then(Value::as_str)?
    } else {
        return None;
    };
    Some((root.to_string(), body))
}
