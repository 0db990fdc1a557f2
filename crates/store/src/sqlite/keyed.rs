//! Key tables for the listings by tenant, filled in batches instead of indexes updated
//! with every row (see [`Keyed`]).

use super::*;

/// A listing by tenant whose index is filled in batches. Rows up to the table's watermark
/// (`keyed.upto`, a rowid) have a key in `keys` (tenant, sort key, rowid); newer rows, a
/// few thousand at most, are found by scanning the rowids above the watermark. An index
/// updated with every row would cost a page per row at every commit: a tenant's next key
/// goes to that tenant's own leaf page, so a group of rows for many tenants writes as many
/// scattered pages, while one batch of thousands of rows writes each tenant's leaf once.
/// The writer thread moves recent rows into the keys in batches (see [`KEY_EVERY`] and
/// [`Keyed::index`]); the keys and the watermark change in one transaction, so a reader
/// sees every row in exactly one of the two places.
pub(super) struct Keyed {
    pub(super) table: &'static str,
    pub(super) keys: &'static str,
    /// The tenant column and the column listings sort and page by.
    pub(super) tenant: &'static str,
    pub(super) key: &'static str,
}

pub(super) const MESSAGE_KEYS: Keyed = Keyed {
    table: "messages",
    keys: "message_keys",
    tenant: "app_id",
    key: "id",
};
pub(super) const DELIVERY_KEYS: Keyed = Keyed {
    table: "deliveries",
    keys: "delivery_keys",
    tenant: "endpoint_id",
    key: "msg_id",
};
pub(super) const ATTEMPT_KEYS: Keyed = Keyed {
    table: "attempts",
    keys: "attempt_keys",
    tenant: "endpoint_id",
    key: "id",
};
pub(super) const KEYED: [&Keyed; 3] = [&MESSAGE_KEYS, &DELIVERY_KEYS, &ATTEMPT_KEYS];

/// How often the writer looks at the recent rows: it moves them into the key tables when
/// a table has at least [`KEY_BATCH_MIN`], and whatever there is every [`KEY_ALL_EVERY`].
/// Bigger batches write fewer key pages per row (a tenant's leaf, and the neighbours
/// SQLite rebalances with it, once per batch: 256-row batches cost 0.55 more WAL pages
/// per delivered message than 2 048-row ones in the e2e benchmark); smaller ones leave
/// fewer recent rows for a listing to scan (at most this many plus 2 s of traffic).
pub(super) const KEY_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
pub(super) const KEY_BATCH_MIN: i64 = 2048;
pub(super) const KEY_ALL_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Keyed {
    /// SQL for the watermark.
    pub(super) fn upto(&self) -> String {
        format!("(SELECT upto FROM keyed WHERE name = '{}')", self.table)
    }

    /// SQL: `FROM` the keys joined to their rows. Keys are checked against their row, so
    /// a key whose row is gone never names a row that reused its rowid.
    pub(super) fn keyed_rows(&self) -> String {
        let Keyed {
            table,
            keys,
            tenant,
            key,
        } = self;
        format!(
            "{keys} JOIN {table} ON {table}.rowid = {keys}.rid
                 AND {table}.{tenant} = {keys}.tenant AND {table}.{key} = {keys}.k"
        )
    }

    /// SQL selecting the rowids of the tenant given as parameter `?{p}`.
    pub(super) fn rowids(&self, p: usize) -> String {
        let Keyed {
            table,
            keys,
            tenant,
            ..
        } = self;
        format!(
            "SELECT {keys}.rid FROM {keyed_rows} WHERE {keys}.tenant = ?{p}
             UNION ALL
             SELECT rowid FROM {table} NOT INDEXED WHERE rowid > {upto} AND {tenant} = ?{p}",
            keyed_rows = self.keyed_rows(),
            upto = self.upto()
        )
    }

    /// Moves the rows above the watermark into the keys if there are at least `min_rows`.
    pub(super) fn index(&self, c: &Connection, min_rows: i64) -> Result<()> {
        let Keyed {
            table,
            keys,
            tenant,
            key,
        } = self;
        let (upto, top): (i64, i64) = c
            .prepare_cached(&format!(
                "SELECT {upto}, coalesce((SELECT max(rowid) FROM {table}), 0)",
                upto = self.upto()
            ))
            .map_err(backend)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        if top - upto < min_rows.max(1) {
            return Ok(());
        }
        // In key order, so the B-tree is walked once from left to right.
        c.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {keys} (tenant, k, rid)
             SELECT {tenant}, {key}, rowid FROM {table} WHERE rowid > ?1 AND rowid <= ?2
             ORDER BY 1, 2"
        ))
        .map_err(backend)?
        .execute([upto, top])
        .map_err(backend)?;
        c.prepare_cached("UPDATE keyed SET upto = ?2 WHERE name = ?1")
            .map_err(backend)?
            .execute(params![table, top])
            .map_err(backend)?;
        Ok(())
    }

    /// Deletes the tenant's rows and their keys.
    pub(super) fn delete_tenant(&self, c: &Connection, tenant: &str) -> Result<()> {
        let Keyed { table, keys, .. } = self;
        c.prepare_cached(&format!(
            "DELETE FROM {table} WHERE rowid IN ({})",
            self.rowids(1)
        ))
        .map_err(backend)?
        .execute([tenant])
        .map_err(backend)?;
        c.prepare_cached(&format!("DELETE FROM {keys} WHERE tenant = ?1"))
            .map_err(backend)?
            .execute([tenant])
            .map_err(backend)?;
        Ok(())
    }
}

/// Moves recent rows into the key tables (see [`Keyed`]).
pub(super) fn index_keys(c: &Connection, min_rows: i64) -> Result<()> {
    KEYED.iter().try_for_each(|k| k.index(c, min_rows))
}

/// After rows were deleted: SQLite gives a new row the highest rowid in use plus one, so
/// once the newest rows are gone, new rows could get rowids at or below the watermark and
/// never be listed. Lowering the watermark to the highest rowid left keeps every row
/// above it unkeyed and every row below it keyed.
pub(super) fn lower_watermarks(c: &Connection) -> Result<()> {
    for k in KEYED {
        c.prepare_cached(&format!(
            "UPDATE keyed SET upto = min(upto, coalesce((SELECT max(rowid) FROM {}), 0))
             WHERE name = ?1",
            k.table
        ))
        .map_err(backend)?
        .execute([k.table])
        .map_err(backend)?;
    }
    Ok(())
}
