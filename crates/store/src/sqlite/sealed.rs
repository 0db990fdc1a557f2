//! The SQLite side of sealing endpoint secrets at rest (see [`crate::sealing`]): the
//! check value, sealing what is still in the clear, re-sealing under a new key.

use super::*;
use crate::sealing::{Check, MainKey};

/// Unlocks the database's main key from `key`, stores its check value if the database
/// had none, and seals every endpoint's settings still in the clear: one transaction,
/// so a refused key changes nothing. Registers the key for this process's reads.
pub(super) fn seal_in_place(conn: &mut Connection, key: &KeySource) -> Result<Sealer> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    let stored = read_check(&tx)?;
    let unlocked = sealing::unlock(key, stored.as_ref()).map_err(StoreError::Key)?;
    if let Some(check) = &unlocked.new_check {
        write_check(&tx, check)?;
    }
    let sealer = unlocked.sealer;
    let sealed = reseal(&tx, &sealer, &sealer, true)?;
    tx.commit().map_err(backend)?;
    sealing::opened(&sealer, unlocked.created_file.as_deref(), sealed);
    Ok(sealer)
}

fn read_check(c: &Connection) -> Result<Option<Check>> {
    c.query_row(
        "SELECT key_id, check_value FROM sealing WHERE id = 1",
        [],
        |r| {
            Ok(Check {
                key_id: r.get(0)?,
                value: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(backend)
}

fn write_check(c: &Connection, check: &Check) -> Result<()> {
    c.execute(
        "INSERT INTO sealing (id, key_id, check_value) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id, check_value = excluded.check_value",
        params![check.key_id, check.value],
    )
    .map_err(backend)?;
    Ok(())
}

/// Re-seals endpoints' settings read with `old` under `new` (only those in the clear
/// when `plain_only`); returns how many.
fn reseal(c: &Connection, old: &Sealer, new: &Sealer, plain_only: bool) -> Result<usize> {
    // The clear form's marker (see `sealing::is_plain`) found by text, without parsing
    // every endpoint's JSON at each start.
    let filter = if plain_only {
        "WHERE instr(settings, '\"secrets\":[') > 0"
    } else {
        ""
    };
    let rows = c
        .prepare(&format!("SELECT id, settings FROM endpoints {filter}"))
        .map_err(backend)?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    let mut update = c
        .prepare("UPDATE endpoints SET settings = ?2 WHERE id = ?1")
        .map_err(backend)?;
    let mut count = 0;
    for (id, stored) in rows {
        if plain_only && !sealing::is_plain(&stored) {
            continue;
        }
        let settings = old
            .open_settings(&id, &stored)
            .map_err(|why| StoreError::Key(format!("endpoint {id}: {why}")))?;
        update
            .execute(params![id, new.seal_settings(&id, &settings)])
            .map_err(backend)?;
        count += 1;
    }
    Ok(count)
}

/// `hookline rotate-key` on an SQLite database: takes the database's lock (so no server
/// may run on it), unlocks it with `old`, then re-seals every endpoint under `new` and
/// stores its check value, in one transaction. Returns how many endpoints were re-sealed.
/// Writing the new key where the server will find it is the caller's.
pub fn rotate_key(path: &Path, old: &KeySource, new: &MainKey) -> Result<usize> {
    let _lock = lock_database(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    migrate(&mut conn)?;
    let old = seal_in_place(&mut conn, old)?;
    let new = Sealer::new(new);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    let count = reseal(&tx, &old, &new, false)?;
    write_check(&tx, &new.check())?;
    tx.commit().map_err(backend)?;
    Ok(count)
}
