//! Matrix: every request that waits for a human is posted to a review room
//! as an `m.room.message` (HTML and plain text, notifying nobody); a
//! reviewer reacts ✅ or ❌ or replies in its thread with `approve` or
//! `deny <reason>`, and that becomes an intent that goes through the request
//! lifecycle like any other decision. When the request ends the message is
//! edited (`m.replace`) to the outcome and the outcome is posted in its
//! thread. Encrypted rooms work the same: the client encrypts and decrypts.
//!
//! Matrix is one [`chat::Adapter`]: it encodes the review view as Matrix
//! events ([`render`]), knows the room routes, and turns reactions and
//! replies into intents. Claims, leases, retries and reconcile are the
//! shared delivery engine's; who may decide is the core's, asked through
//! this adapter's [`Directory`] (user ids and a power level). The Matrix
//! client itself (login, session and crypto store, sync) is the
//! `holdpoint-matrix` crate.

pub mod render;

use crate::chat::{self, Posted};
use crate::config::MatrixConfig;
use crate::core::{
    Bot, Decided, Delivery, Directory, Intent, Realm, Refusal, Reviewer, StoredRequest,
};
use crate::view::ReviewView;
use holdpoint_matrix::{Incoming, Kind, Login, Matrix as Client, Recovery};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The file in the data directory that one process holds locked while it
/// uses the device: a device must never be used by two processes at once.
pub const LOCK_FILE: &str = "device.lock";

/// The lease in the database that one replica holds while it uses the
/// device (replicas on other machines share the database, not the lock
/// file).
pub const LEASE: &str = "matrix-device";

/// The exit status of a replica that could not keep its lease on the
/// device: another may be using it, so this process stops at once and its
/// supervisor starts it again, to wait for the device.
pub const LOST_DEVICE_EXIT: i32 = 75;

/// The Matrix adapter.
pub struct Matrix {
    pub bot: Arc<Bot>,
    pub cfg: MatrixConfig,
    client: OnceLock<Client>,
    /// Configured room (id or alias) → room id, once joined.
    rooms: Mutex<HashMap<String, String>>,
    /// Event id of a review message (or its copy in the pager room) →
    /// its request id.
    messages: Mutex<HashMap<String, String>>,
    /// Requester's user id → the direct-message room with them.
    direct: Mutex<HashMap<String, String>>,
}

/// Starts Matrix if it is configured: spawns the tasks that log in (with
/// backoff while the homeserver cannot be reached), follow the rooms and
/// post messages. Requests wait on the web queue until it is up.
pub fn start(bot: &Arc<Bot>) -> Option<Arc<Matrix>> {
    let cfg = bot.config().matrix.clone()?;
    crate::slack::install_crypto_provider();
    let matrix = Arc::new(Matrix {
        bot: bot.clone(),
        cfg,
        client: OnceLock::new(),
        rooms: Mutex::new(HashMap::new()),
        messages: Mutex::new(HashMap::new()),
        direct: Mutex::new(HashMap::new()),
    });
    bot.set_directory(Realm::Matrix, matrix.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(matrix.clone().connect(tx));
    tokio::spawn(matrix.clone().handle(rx));
    chat::Engine::start(matrix.clone());
    Some(matrix)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Matrix {
    fn client(&self) -> Result<&Client, String> {
        self.client
            .get()
            .ok_or_else(|| "not logged in to the homeserver yet".to_string())
    }

    /// Takes the device, logs in, joins the rooms, then follows the sync
    /// stream for as long as the process lives.
    async fn connect(self: Arc<Self>, tx: tokio::sync::mpsc::Sender<Incoming>) {
        self.take_lease().await;
        let dir = self.cfg.data_dir.clone();
        // Held for the life of the process.
        let _device = loop {
            match take_device(&dir) {
                Ok(f) => break f,
                Err(e) => {
                    tracing::warn!(
                        "Matrix: {e}; another process uses the device, waiting to take over"
                    );
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        let login = Login {
            homeserver: self.cfg.homeserver.clone(),
            user_id: self.cfg.user_id.clone(),
            password: self.cfg.password.as_ref().map(|p| p.expose().to_string()),
            access_token: self
                .cfg
                .access_token
                .as_ref()
                .map(|p| p.expose().to_string()),
            device_id: self.cfg.device_id.clone(),
            data_dir: dir,
            device_name: "holdpoint".into(),
        };
        let mut wait = Duration::from_secs(1);
        let client = loop {
            match self.log_in(&login).await {
                Ok(c) => break c,
                Err(e) => {
                    self.bot.metrics().chat_failure("matrix", "login");
                    tracing::error!(
                        "Matrix: cannot log in to {} (trying again in {} s): {e}",
                        self.cfg.homeserver,
                        wait.as_secs()
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        };
        let _ = self.client.set(client.clone());
        let mut wait = Duration::from_secs(1);
        loop {
            match client.run(tx.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    self.bot.metrics().chat_failure("matrix", "sync");
                    tracing::error!(
                        "Matrix: the sync with {} failed (trying again in {} s): {e}",
                        self.cfg.homeserver,
                        wait.as_secs()
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Waits until this replica holds the device's lease in the database,
    /// then keeps renewing it for the life of the process. A replica that
    /// finds another holding it, or cannot renew it before it lapses,
    /// exits: it may no longer be the only one using the device.
    async fn take_lease(&self) {
        let ttl = self.cfg.device_lease;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let holder = crate::core::random_hex(8);
        let mut waiting_said = false;
        loop {
            match self.bot.hold_lease(LEASE, &holder, ttl_ms).await {
                Ok(true) => break,
                Ok(false) => {
                    if !waiting_said {
                        tracing::info!(
                            "Matrix: another replica uses the device; waiting to take over when it stops"
                        );
                        waiting_said = true;
                    }
                }
                Err(e) => tracing::error!("Matrix: cannot take the device's lease: {e}"),
            }
            tokio::time::sleep(ttl / 3).await;
        }
        tracing::debug!("Matrix: this replica holds the device (lease {holder})");
        let bot = self.bot.clone();
        tokio::spawn(async move {
            let mut held_at = std::time::Instant::now();
            loop {
                tokio::time::sleep(ttl / 3).await;
                match bot.hold_lease(LEASE, &holder, ttl_ms).await {
                    Ok(true) => held_at = std::time::Instant::now(),
                    Ok(false) => {
                        tracing::error!(
                            "Matrix: another replica took the device's lease; stopping so that one process uses it"
                        );
                        std::process::exit(LOST_DEVICE_EXIT);
                    }
                    Err(e) => {
                        // Lapsing, it may be taken: stop before it can be.
                        if held_at.elapsed() + ttl / 3 >= ttl {
                            tracing::error!(
                                "Matrix: cannot renew the device's lease ({e}); stopping before another replica may take it"
                            );
                            std::process::exit(LOST_DEVICE_EXIT);
                        }
                        tracing::warn!("Matrix: cannot renew the device's lease yet: {e}");
                    }
                }
            }
        });
    }

    async fn log_in(&self, login: &Login) -> Result<Client, String> {
        let client = Client::connect(login).await.map_err(|e| e.to_string())?;
        let key = self.cfg.recovery_key.as_ref().map(|k| k.expose());
        if let Some(key) = key {
            // Before cross-signing's bootstrap: a new device takes the
            // bot's identity from secret storage instead of replacing it.
            match client.restore_identity(key).await {
                Ok(true) => tracing::info!(
                    "Matrix: the bot's cross-signing identity was restored from secret storage with the recovery key"
                ),
                Ok(false) => {}
                Err(e) => {
                    return Err(format!(
                        "cannot open the bot's secret storage with matrix.recovery_key (is it the right key?): {e}"
                    ));
                }
            }
        }
        if let Err(e) = client
            .bootstrap_cross_signing(self.cfg.password.as_ref().map(|p| p.expose()))
            .await
        {
            tracing::warn!(
                "Matrix: cannot set up cross-signing for the bot's device; clients that send room keys only to cross-signed devices will leave it out: {e}"
            );
        }
        match client.set_up_recovery(key).await {
            Ok(Recovery::Created(new_key)) => {
                // Shown once, on the terminal only: never in the log.
                eprintln!(
                    "\nholdpoint-bot: Matrix secret storage was created for {}.\n\
                     Its recovery key, shown this once (keep it like a password; give it as\n\
                     matrix.recovery_key or HOLDPOINT_MATRIX_RECOVERY_KEY to restore the bot's\n\
                     identity on a new device or data directory):\n\n    {new_key}\n",
                    client.user_id()
                );
                tracing::info!(
                    "Matrix: secret storage created; its recovery key was printed once on standard error"
                );
            }
            Ok(Recovery::Passphrase) => {
                tracing::info!("Matrix: secret storage created, protected by matrix.recovery_key")
            }
            Ok(Recovery::Existing) => {}
            Err(e) => tracing::warn!(
                "Matrix: cannot set up secret storage; the bot's identity cannot be restored on a new device: {e}"
            ),
        }
        let mut wanted = vec![self.cfg.room.clone()];
        wanted.extend(self.cfg.routes.iter().map(|r| r.room.clone()));
        wanted.extend(self.cfg.pager_room.clone());
        if let Some(d) = &self.bot.config().digest {
            wanted.extend(d.matrix_rooms.iter().cloned());
        }
        for room in wanted {
            let id = client.join(&room).await.map_err(|e| {
                format!("cannot join {room} (invite the bot, or check the alias): {e}")
            })?;
            lock(&self.rooms).insert(room, id);
        }
        // No sync here: the first sync runs with the event handlers in
        // place, so what reviewers did while the bot was down still counts.
        tracing::info!(
            "Matrix: ready as {} (device {}, key {}), review room {}",
            client.user_id(),
            client.device_id().unwrap_or_default(),
            client.fingerprint().await.unwrap_or_default(),
            self.cfg.room
        );
        Ok(client)
    }

    fn room_id(&self, room: &str) -> Result<String, String> {
        lock(&self.rooms)
            .get(room)
            .cloned()
            .ok_or_else(|| format!("the bot has not joined {room} yet"))
    }

    /// The request whose review message is `event_id`, with the room the
    /// message is in. Only pending requests can be decided, so on a miss
    /// the pending ones are looked up.
    async fn request_of(&self, event_id: &str) -> Option<(String, String)> {
        let known = lock(&self.messages).get(event_id).cloned();
        let ids = match known {
            Some(id) => vec![id],
            None => match self.bot.pending_ids().await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!("Matrix: cannot list pending requests: {e}");
                    return None;
                }
            },
        };
        let rows = match self
            .bot
            .deliveries_of(<Self as chat::Adapter>::NAME, &ids)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("Matrix: cannot list posted messages: {e}");
                return None;
            }
        };
        if let Some(d) = rows.into_values().find(|d| d.handle == event_id) {
            lock(&self.messages).insert(event_id.to_string(), d.request_id.clone());
            return Some((d.request_id, d.destination));
        }
        // The copy a notify step posted in the pager room counts too.
        match self
            .bot
            .step_post_of(<Self as chat::Adapter>::NAME, event_id)
            .await
        {
            Ok(Some((id, p))) => {
                lock(&self.messages).insert(event_id.to_string(), id.clone());
                Some((id, p.destination))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!("Matrix: cannot look up the pager message {event_id}: {e}");
                None
            }
        }
    }

    /// Answers in the thread of `root`.
    async fn answer(&self, room_id: &str, root: &str, text: &str) {
        let Ok(client) = self.client() else {
            return;
        };
        let content = render::thread_content(root, &render::plain(text));
        if let Err(e) = client.send(room_id, "m.room.message", &content).await {
            self.bot.metrics().chat_failure("matrix", "thread");
            tracing::error!("Matrix: cannot answer in the thread of {root}: {e}");
        }
    }

    /// Turns reactions and replies into intents, one at a time.
    async fn handle(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<Incoming>) {
        while let Some(inc) = rx.recv().await {
            self.incoming(inc).await;
        }
    }

    async fn incoming(&self, inc: Incoming) {
        let (root, reaction) = match &inc.kind {
            Kind::Reaction { target, .. } => (target.clone(), true),
            Kind::Reply { root, .. } => (root.clone(), false),
        };
        // Only what relates to a review message, in the room it is in.
        let Some((id, room_id)) = self.request_of(&root).await else {
            return;
        };
        if inc.room_id != room_id {
            return;
        }
        let req = match self.bot.get(&id).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("Matrix: cannot read request {id}: {e}");
                return;
            }
        };
        let intent = match &inc.kind {
            Kind::Reaction { key, .. } => match render::reaction_decision(key) {
                Some(true) => Intent::Approve { reason: None },
                Some(false) => Intent::Deny { reason: None },
                None => return,
            },
            Kind::Reply { body, .. } => match render::reply_decision(body) {
                Some((true, _)) => Intent::Approve { reason: None },
                Some((false, reason)) => Intent::Deny { reason },
                None => return,
            },
        };
        if req.status.is_final() {
            tracing::debug!("Matrix: {} acted on {id}, already decided", inc.sender);
            return;
        }
        let encrypted = match self.client() {
            Ok(c) => c.is_encrypted(&room_id).await.unwrap_or(true),
            Err(_) => true,
        };
        if self.cfg.verified_devices_only && encrypted && inc.verified != Some(true) {
            self.answer(&room_id, &root, &render::unverified(reaction))
                .await;
            return;
        }
        let view = ReviewView::of(&req, &self.bot.config().base_url());
        if reaction && intent.is_approval() && render::needs_reply(req.request.risk()) {
            self.answer(&room_id, &root, &render::confirm_needed(&view))
                .await;
            return;
        }
        let reviewer = Reviewer {
            realm: Realm::Matrix,
            id: inc.sender.clone(),
        };
        match self
            .bot
            .decide(&reviewer, &id, Some(&req.request.command_hash), intent)
            .await
        {
            Ok(Decided::Won(_)) => {
                tracing::info!("Matrix: {} decided {id}", inc.sender);
            }
            Ok(Decided::Refused(why)) => {
                tracing::info!("Matrix: refused {} on {id}: {why}", inc.sender);
                self.answer(
                    &room_id,
                    &root,
                    &format!("{}: {}", inc.sender, render::refusal(&why)),
                )
                .await;
            }
            Ok(Decided::Voted {
                approvals,
                required,
                missing,
            }) => {
                let from = if missing.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", crate::core::groups_needed(&missing))
                };
                self.answer(
                    &room_id,
                    &root,
                    &format!(
                        "{}: approval counted, {approvals} of {required}; it waits for another reviewer{from}.",
                        inc.sender
                    ),
                )
                .await;
            }
            Ok(Decided::Already(_) | Decided::NotFound) => {}
            Err(e) => {
                tracing::error!(
                    "Matrix: cannot record the decision of {} on {id}: {e}",
                    inc.sender
                );
                self.answer(
                    &room_id,
                    &root,
                    "holdpoint could not record this decision; nothing was decided. Try again in a moment.",
                )
                .await;
            }
        }
    }

    /// Posts the audit digest in `room` (an id or alias it joined).
    pub async fn post_digest(
        &self,
        room: &str,
        report: &crate::core::digest::Report,
        late: bool,
        base: &str,
    ) -> Result<(), String> {
        let client = self.client()?;
        let room_id = self.room_id(room)?;
        let base = base.trim_end_matches('/').to_string();
        let link = |id: &str| format!("{base}/#{id}");
        let title = crate::digest::title(report.period);
        let note = if late {
            " (sent late: the bot was down when it was due)"
        } else {
            ""
        };
        let text = render::Text {
            body: format!(
                "{title}{note}\n{}",
                crate::digest::render(report, crate::digest::Format::Text, &base)
                    .split_once('\n')
                    .map(|(_, rest)| rest)
                    .unwrap_or_default()
            ),
            html: format!(
                "<h3>{}{}</h3>{}",
                render::escape(&title),
                render::escape(note),
                crate::digest::html_body(report, &link)
            ),
        };
        client
            .send(&room_id, "m.room.message", &render::message(&text))
            .await
            .map_err(|e| e.to_string())?;
        for chart in crate::chart::charts(report) {
            let image = holdpoint_matrix::Image {
                name: chart.name,
                png: &chart.png,
                width: chart.width,
                height: chart.height,
                alt: &chart.alt,
            };
            client
                .send_image(&room_id, &image)
                .await
                .map_err(|e| format!("sending {}: {e}", chart.name))?;
        }
        Ok(())
    }

    /// Whether `user` may decide: listed, or with the power level asked for
    /// in the review room.
    async fn is_reviewer(&self, user: &str) -> Result<bool, Refusal> {
        if self.cfg.reviewers.iter().any(|r| r == user) {
            return Ok(true);
        }
        let Some(min) = self.cfg.min_power_level else {
            return Ok(false);
        };
        let client = self.client().map_err(|_| Refusal::DirectoryUnavailable)?;
        let room = self
            .room_id(&self.cfg.room)
            .map_err(|_| Refusal::DirectoryUnavailable)?;
        match client.power_level(&room, user).await {
            Ok(None) => Ok(true),
            Ok(Some(n)) => Ok(n >= min),
            Err(e) => {
                self.bot.metrics().chat_failure("matrix", "power_levels");
                tracing::error!("Matrix: cannot read the power level of {user}: {e}");
                Err(Refusal::DirectoryUnavailable)
            }
        }
    }
}

/// Locks the device file in `dir`, or says who cannot.
fn take_device(dir: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    f.try_lock()
        .map_err(|e| format!("{} is locked ({e})", path.display()))?;
    Ok(f)
}

impl Directory for Matrix {
    fn admits<'a>(
        &'a self,
        id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Refusal>> + Send + 'a>> {
        Box::pin(self.is_reviewer(id))
    }
}

impl chat::Adapter for Matrix {
    const NAME: &'static str = "matrix";
    const LABEL: &'static str = "Matrix";

    fn bot(&self) -> &Arc<Bot> {
        &self.bot
    }

    fn destination(&self, req: &StoredRequest) -> String {
        self.cfg
            .room_for(&req.runner, req.request.risk())
            .to_string()
    }

    async fn post(&self, destination: &str, view: &ReviewView) -> Result<Posted, String> {
        let client = self.client()?;
        let room_id = self.room_id(destination)?;
        let event = client
            .send(&room_id, "m.room.message", &render::request_content(view))
            .await
            .map_err(|e| e.to_string())?;
        lock(&self.messages).insert(event.clone(), view.id.clone());
        Ok(Posted {
            destination: room_id,
            handle: event,
        })
    }

    async fn update(&self, at: &Delivery, view: &ReviewView) -> Result<(), String> {
        let client = self.client()?;
        client
            .send(
                &at.destination,
                "m.room.message",
                &render::edit_content(&at.handle, view),
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn reply(&self, at: &Delivery, view: &ReviewView) -> Result<(), String> {
        let client = self.client()?;
        let content = render::thread_content(&at.handle, &render::outcome_reply(view));
        client
            .send(&at.destination, "m.room.message", &content)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    const ESCALATES: bool = true;

    async fn remind(&self, at: &Delivery, view: &ReviewView) -> Result<(), String> {
        let client = self.client()?;
        let content = render::in_thread(
            &at.handle,
            render::mentioning(&self.cfg.reviewers, &render::reminder(view)),
        );
        client
            .send(&at.destination, "m.room.message", &content)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn notify(
        &self,
        _req: &StoredRequest,
        view: &ReviewView,
    ) -> Result<Option<Posted>, String> {
        let Some(room) = self.cfg.pager_room.as_deref() else {
            return Ok(None);
        };
        let client = self.client()?;
        let room_id = self.room_id(room)?;
        let oncall = if self.cfg.oncall.is_empty() {
            &self.cfg.reviewers
        } else {
            &self.cfg.oncall
        };
        let content = render::mentioning(oncall, &render::pager_text(view));
        let event = client
            .send(&room_id, "m.room.message", &content)
            .await
            .map_err(|e| e.to_string())?;
        lock(&self.messages).insert(event.clone(), view.id.clone());
        Ok(Some(Posted {
            destination: room_id,
            handle: event,
        }))
    }

    async fn tell_requester(
        &self,
        req: &StoredRequest,
        view: &ReviewView,
        news: chat::News,
    ) -> Result<bool, String> {
        let Some(user) = chat::requester_in(req, Realm::Matrix, Client::is_user_id) else {
            return Ok(false);
        };
        let client = self.client()?;
        let known = lock(&self.direct).get(&user.id).cloned();
        let room_id = match known {
            Some(r) => r,
            None => {
                let r = client
                    .direct_room(&user.id)
                    .await
                    .map_err(|e| format!("cannot open a direct room with {}: {e}", user.id))?;
                lock(&self.direct).insert(user.id.clone(), r.clone());
                r
            }
        };
        let text = match news {
            chat::News::Ended => render::requester_outcome(view),
            chat::News::Escalated => render::requester_escalated(view),
        };
        client
            .send(&room_id, "m.room.message", &render::message(&text))
            .await
            .map(|_| true)
            .map_err(|e| e.to_string())
    }
}
