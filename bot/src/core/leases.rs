//! Leases: a named hold that exactly one replica on a database has at a
//! time, until it stops renewing it. The Matrix device is one: two
//! processes must never use one device, so a replica uses it only while
//! it holds `matrix-device`, and another takes over when the holder dies.

use super::Bot;
use super::entity::lease;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, Set};

impl Bot {
    /// Takes or renews lease `name` for `holder` until `ttl_ms` from now:
    /// `true` when `holder` has it now (it was free, lapsed, or already
    /// theirs), `false` while another holder's is current.
    pub async fn hold_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, DbErr> {
        let now = self.now_ms();
        let until = now.saturating_add(ttl_ms);
        lease::Entity::insert(lease::ActiveModel {
            name: Set(name.to_string()),
            holder: Set(holder.to_string()),
            until: Set(until),
        })
        .on_conflict(
            OnConflict::column(lease::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        let moved = lease::Entity::update_many()
            .col_expr(lease::Column::Holder, Expr::value(holder))
            .col_expr(lease::Column::Until, Expr::value(until))
            .filter(lease::Column::Name.eq(name))
            .filter(
                lease::Column::Holder
                    .eq(holder)
                    .or(lease::Column::Until.lt(now)),
            )
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(moved == 1)
    }
}
