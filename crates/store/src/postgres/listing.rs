//! Cursor pagination on PostgreSQL, with the SQLite backend's semantics: `iterator` is
//! the last key of the previous page, a leading `-` (what `prevIterator` hands out)
//! walks back from the given key, `done` says a forward walk reached the end (never on a
//! backward page), and an empty page keeps the cursor it was asked for.
//!
//! Keys compare byte by byte (the key columns are `COLLATE "C"`, migration 2), so the
//! order is SQLite's and, for KSUID ids, creation order; each listing's `WHERE` and
//! `ORDER BY` match an index, so a page costs its rows, not the table.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::errors::backend;
use crate::common::Walk;
use crate::*;

/// Statement parameters collected while the SQL text is built.
#[derive(Default)]
pub(super) struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    /// Adds a parameter and returns its placeholder (`$n`).
    pub(super) fn push(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(v));
        format!("${}", self.0.len())
    }

    pub(super) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// ` AND {col} > $n` (or `<`) past the walk's cursor, with its parameter; nothing
/// without one.
fn past_cursor(walk: &Walk, col: &str, params: &mut Params) -> String {
    match &walk.cursor {
        Some(c) => {
            let p = params.push(c.clone());
            format!(" AND {col} {} {p}", walk.past())
        }
        None => String::new(),
    }
}

/// Runs a cursor-paginated query. `sql` selects the rows with its `WHERE` already
/// present (`WHERE true` if nothing else), its parameters in `params`; `key` is the
/// column the cursor walks.
pub(super) async fn paginate<T>(
    c: &impl GenericClient,
    sql: &str,
    mut params: Params,
    key: &str,
    q: &ListQuery,
    map: impl Fn(&Row) -> Result<T>,
    key_of: impl Fn(&T) -> String,
) -> Result<Page<T>> {
    let walk = Walk::new(q);
    let past = past_cursor(&walk, key, &mut params);
    let limit = params.push(i64::try_from(q.limit).unwrap_or(i64::MAX - 1) + 1);
    let sql = format!("{sql}{past} ORDER BY {key} {} LIMIT {limit}", walk.dir());
    let stmt = c.prepare_cached(&sql).await.map_err(backend)?;
    let rows = c
        .query(&stmt, &params.refs())
        .await
        .map_err(backend)?
        .iter()
        .map(map)
        .collect::<Result<Vec<T>>>()?;
    Ok(walk.page(rows, q.limit, key_of))
}
