//! Cursor pagination (`iterator`, `prevIterator`, `done`) over indexes and key tables.

use super::*;
use crate::common::Walk;

/// ` AND {col} > ?` (or `<`) past the walk's cursor, with its argument; nothing
/// without one.
pub(super) fn past_cursor(walk: &Walk, col: &str, args: &mut Vec<Value>) -> String {
    match &walk.cursor {
        Some(c) => {
            args.push(Value::Text(c.clone()));
            format!(" AND {col} {} ?", walk.past())
        }
        None => String::new(),
    }
}

pub(super) fn query_rows<T>(
    conn: &Connection,
    sql: &str,
    args: Vec<Value>,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), map)
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<T>>>()
        .map_err(backend)?;
    Ok(rows)
}

/// Runs a cursor-paginated query. `sql` selects the rows (with `WHERE` already present,
/// possibly `WHERE 1`), `key` is the column the cursor walks.
pub(super) fn paginate<T>(
    conn: &Connection,
    sql: &str,
    mut args: Vec<Value>,
    key: &str,
    q: &ListQuery,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
    key_of: impl Fn(&T) -> String,
) -> Result<Page<T>> {
    let walk = Walk::new(q);
    let sql = format!(
        "{sql}{} ORDER BY {key} {} LIMIT ?",
        past_cursor(&walk, key, &mut args),
        walk.dir()
    );
    args.push(Value::Integer(q.limit as i64 + 1));
    let rows = query_rows(conn, &sql, args, map)?;
    Ok(walk.page(rows, q.limit, key_of))
}

/// [`paginate`] over one tenant's rows of a [`Keyed`] table: selects `cols` of
/// `k.table`'s rows of `tenant` that pass `filter` (` AND ...` on the table's columns,
/// with `filter_args`), walking `k.key`. The keyed rows come in key order from the key
/// table, the recent ones are sorted (a few thousand rows at most), and SQLite merges
/// the two up to the page's limit.
#[allow(clippy::too_many_arguments)]
pub(super) fn paginate_keyed<T>(
    conn: &Connection,
    k: &Keyed,
    cols: &str,
    tenant: &str,
    filter: &str,
    filter_args: Vec<Value>,
    q: &ListQuery,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
    key_of: impl Fn(&T) -> String,
) -> Result<Page<T>> {
    let Keyed {
        table,
        keys,
        tenant: tenant_col,
        key,
    } = k;
    let walk = Walk::new(q);
    let mut args = vec![Value::Text(tenant.to_string())];
    let keyed_past = past_cursor(&walk, &format!("{keys}.k"), &mut args);
    args.extend(filter_args.iter().cloned());
    args.push(Value::Text(tenant.to_string()));
    let recent_past = past_cursor(&walk, &format!("{table}.{key}"), &mut args);
    args.extend(filter_args);
    args.push(Value::Integer(q.limit as i64 + 1));
    let dir = walk.dir();
    let sql = format!(
        "WITH page (rid, k) AS (
             SELECT {keys}.rid, {keys}.k FROM {keyed_rows}
             WHERE {keys}.tenant = ?{keyed_past}{filter}
             UNION ALL
             SELECT {table}.rowid, {table}.{key} FROM {table} NOT INDEXED
             WHERE {table}.rowid > {upto} AND {table}.{tenant_col} = ?{recent_past}{filter}
             ORDER BY 2 {dir} LIMIT ?
         )
         SELECT {cols} FROM page JOIN {table} ON {table}.rowid = page.rid ORDER BY page.k {dir}",
        keyed_rows = k.keyed_rows(),
        upto = k.upto()
    );
    let rows = query_rows(conn, &sql, args, map)?;
    Ok(walk.page(rows, q.limit, key_of))
}

/// The messages of `app_id` with a delivery that failed for good that pass `filter`
/// (` AND ...` on `messages` columns, with `filter_args`), a page of them. Walks the
/// partial index `deliveries_failed` in message order and looks each message up by id,
/// so a page costs its own rows (and those the filter turns down), however many
/// deliveries the app has. A message with several failed deliveries is listed once, for
/// the one to the first endpoint.
/// The query of [`messages_failed`]: `?1` the application, then the cursor's and the
/// filter's arguments and the limit. The state is written out so that the partial index
/// `deliveries_failed` matches (not forced with `INDEXED BY`: a filter that can match
/// nothing, `event_type IN ()`, leaves SQLite no plan that uses it, and it refuses).
pub(super) fn failed_sql(cols: &str, past: &str, filter: &str, dir: &str) -> String {
    format!(
        "SELECT {cols} FROM deliveries
         JOIN messages ON messages.id = deliveries.msg_id
         WHERE deliveries.app_id = ?1 AND deliveries.status = 'failed'{past}
           AND NOT EXISTS (SELECT 1 FROM deliveries AS first
                           WHERE first.msg_id = deliveries.msg_id
                             AND first.status = deliveries.status
                             AND first.endpoint_id < deliveries.endpoint_id)
           AND messages.app_id = ?1{filter}
         ORDER BY deliveries.msg_id {dir} LIMIT ?"
    )
}

pub(super) fn messages_failed(
    conn: &Connection,
    app_id: &str,
    filter: &str,
    filter_args: Vec<Value>,
    q: &ListQuery,
) -> Result<Page<Message>> {
    let walk = Walk::new(q);
    let mut args = vec![Value::Text(app_id.to_string())];
    let past = past_cursor(&walk, "deliveries.msg_id", &mut args);
    args.extend(filter_args);
    args.push(Value::Integer(q.limit as i64 + 1));
    let cols = MSG_COLS
        .split(", ")
        .map(|c| format!("messages.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = failed_sql(&cols, &past, filter, walk.dir());
    let rows = query_rows(conn, &sql, args, msg_row)?;
    Ok(walk.page(rows, q.limit, |m| m.id.clone()))
}
