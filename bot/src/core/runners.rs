//! Runner registration and tokens. A token is shown once, when it is made;
//! the database keeps only its SHA-256 (a token is 160 random bits, so a
//! fast hash is enough).

use super::Bot;
use super::audit::NewEvent;
use super::db::{random_hex, sha256_hex};
use super::entity::runner;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;

/// Prefix of every runner token, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "hpr_";

/// Why a runner command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("a runner named {0:?} already exists (revoke it first, or pick another name)")]
    Exists(String),
    #[error("no runner named {0:?}")]
    NotFound(String),
    #[error("runner names are 1–64 characters of letters, digits, `.`, `_` and `-`; {0:?} is not")]
    BadName(String),
}

/// A runner identity: one registration. Its name is what people read; its
/// id is who it is. A revoked runner's name given to `runner add` again is
/// a new identity, which owns none of the old one's requests or record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunnerId {
    pub id: i64,
    pub name: String,
}

impl RunnerId {
    /// The identity as [`Bot::authenticate`] found it (or, in tests of the
    /// core, one made up).
    pub fn new(id: i64, name: impl Into<String>) -> RunnerId {
        RunnerId {
            id,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for RunnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A registered runner, as `runner list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_seen_at: Option<i64>,
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Runner(RunnerId),
    Revoked(String),
    Unknown,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Bot {
    /// Registers a runner; returns its token (the only time it is seen).
    /// A revoked name can be registered again.
    pub async fn add_runner(&self, name: &str) -> Result<String, RunnerError> {
        if !valid_name(name) {
            return Err(RunnerError::BadName(name.to_string()));
        }
        let token = format!("{TOKEN_PREFIX}{}", random_hex(20));
        let hash = sha256_hex(token.as_bytes());
        let _w = self.write_lock.lock().await;
        let active = runner::Entity::find()
            .filter(runner::Column::Name.eq(name))
            .filter(runner::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?;
        if active.is_some() {
            return Err(RunnerError::Exists(name.to_string()));
        }
        // Always a new row: a revoked runner's name is a new identity.
        let row = runner::ActiveModel {
            name: Set(name.to_string()),
            token_hash: Set(hash),
            created_at: Set(self.now_ms()),
            revoked_at: Set(None),
            last_seen_at: Set(None),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        drop(_w);
        self.audit(&[NewEvent::at(
            self.now_ms(),
            "runner.added",
            Some(name),
            None,
            json!({ "runner_id": row.id }),
        )])
        .await?;
        Ok(token)
    }

    /// Revokes a runner's token and cancels its pending requests, so none of
    /// them can be approved afterwards. Open connections are closed by the
    /// server within a second.
    pub async fn revoke_runner(&self, name: &str) -> Result<(), RunnerError> {
        let Some(row) = runner::Entity::find()
            .filter(runner::Column::Name.eq(name))
            .filter(runner::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
        else {
            return Err(RunnerError::NotFound(name.to_string()));
        };
        // Under the writer lock, as submissions are: a submission either
        // committed before this (and is cancelled below) or sees the
        // revocation in its own transaction.
        let revoked = {
            let _w = self.write_lock.lock().await;
            super::audit::retrying(|| async {
                let txn = super::audit::begin_write(&self.db).await?;
                let res = runner::Entity::update_many()
                    .col_expr(runner::Column::RevokedAt, Expr::value(self.now_ms()))
                    .filter(runner::Column::Id.eq(row.id))
                    .filter(runner::Column::RevokedAt.is_null())
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
                Ok(res.rows_affected)
            })
            .await?
        };
        if revoked == 0 {
            return Err(RunnerError::NotFound(name.to_string()));
        }
        let who = RunnerId::new(row.id, row.name);
        self.audit(&[NewEvent::at(
            self.now_ms(),
            "runner.revoked",
            Some(name),
            None,
            json!({ "runner_id": who.id }),
        )])
        .await?;
        let cancelled = self
            .cancel_pending_of(&who, "the runner's token was revoked")
            .await
            .map_err(|e| match e {
                super::LifecycleError::Db(e) => RunnerError::Db(e),
                other => RunnerError::Db(DbErr::Custom(other.to_string())),
            })?;
        if cancelled > 0 {
            tracing::info!(
                runner = name,
                cancelled,
                "cancelled a revoked runner's requests"
            );
        }
        let closed = self.hub.close_runners(
            &[who.id],
            holdpoint_shared::protocol::close::REVOKED,
            "this runner's token was revoked",
        );
        if closed > 0 {
            tracing::info!(
                runner = name,
                closed,
                "closed the connections of a revoked runner"
            );
        }
        Ok(())
    }

    /// Every runner identity, by name, then oldest first (a name given
    /// again after a revocation is listed once per identity).
    pub async fn runners(&self) -> Result<Vec<RunnerInfo>, DbErr> {
        Ok(runner::Entity::find()
            .order_by_asc(runner::Column::Name)
            .order_by_asc(runner::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| RunnerInfo {
                id: r.id,
                name: r.name,
                created_at: r.created_at,
                revoked_at: r.revoked_at,
                last_seen_at: r.last_seen_at,
            })
            .collect())
    }

    /// Checks a bearer token.
    pub async fn authenticate(&self, token: &str) -> Result<Auth, DbErr> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(Auth::Unknown);
        }
        let hash = sha256_hex(token.as_bytes());
        Ok(
            match runner::Entity::find()
                .filter(runner::Column::TokenHash.eq(hash))
                .one(&self.db)
                .await?
            {
                None => Auth::Unknown,
                Some(r) if r.revoked_at.is_some() => Auth::Revoked(r.name),
                Some(r) => Auth::Runner(RunnerId::new(r.id, r.name)),
            },
        )
    }

    /// Whether this runner identity is still allowed in (checked on every
    /// audit batch, so a revocation made by another process counts at once;
    /// a new runner with the same name does not revive it). A submission
    /// checks the same inside its own transaction.
    pub async fn runner_active(&self, runner: &RunnerId) -> Result<bool, DbErr> {
        Ok(runner::Entity::find()
            .filter(runner::Column::Id.eq(runner.id))
            .filter(runner::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
            .is_some())
    }

    /// Revoked runner identities that still have connections here.
    pub(super) async fn revoked_but_connected(&self) -> Result<Vec<i64>, DbErr> {
        let connected = self.hub.connected_runners();
        if connected.is_empty() {
            return Ok(vec![]);
        }
        runner::Entity::find()
            .filter(runner::Column::Id.is_in(connected))
            .filter(runner::Column::RevokedAt.is_not_null())
            .select_only()
            .column(runner::Column::Id)
            .into_tuple::<i64>()
            .all(&self.db)
            .await
    }

    /// The identity that holds `name` now, unless it is revoked.
    pub async fn runner_named(&self, name: &str) -> Result<Option<RunnerId>, DbErr> {
        Ok(runner::Entity::find()
            .filter(runner::Column::Name.eq(name))
            .filter(runner::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
            .map(|r| RunnerId::new(r.id, r.name)))
    }

    /// Records that a runner connected.
    pub async fn seen(&self, runner: &RunnerId) -> Result<(), DbErr> {
        runner::Entity::update_many()
            .col_expr(runner::Column::LastSeenAt, Expr::value(self.now_ms()))
            .filter(runner::Column::Id.eq(runner.id))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
