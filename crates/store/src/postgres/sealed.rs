//! The PostgreSQL side of sealing endpoint secrets at rest (see [`crate::sealing`]): the
//! check value, sealing what is still in the clear, re-sealing under a new key. Each runs
//! in one transaction under the migration lock, so processes starting together agree on
//! one key and seal each row once.

use deadpool_postgres::Pool;
use tokio_postgres::Transaction;

use super::{cause_chain, connect, migrate, PgSettings, MIGRATION_LOCK};
use crate::sealing::{self, Check, KeySource, MainKey, Sealer};

fn fail(e: tokio_postgres::Error) -> String {
    format!("sealing secrets: {}", cause_chain(&e))
}

/// Unlocks the database's main key from `key`, stores its check value if the database
/// had none, and seals every endpoint's settings still in the clear: one transaction,
/// so a refused key changes nothing. Registers the key for this process's reads.
pub async fn seal_in_place(pool: &Pool, key: &KeySource) -> Result<Sealer, String> {
    let mut client = pool.get().await.map_err(|e| format!("PostgreSQL: {e}"))?;
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let stored = read_check(&tx).await?;
    let unlocked = sealing::unlock(key, stored.as_ref())?;
    if let Some(check) = &unlocked.new_check {
        write_check(&tx, check).await?;
    }
    let sealer = unlocked.sealer;
    let sealed = reseal(&tx, &sealer, &sealer, true).await?;
    tx.commit().await.map_err(fail)?;
    sealing::opened(&sealer, unlocked.created_file.as_deref(), sealed);
    Ok(sealer)
}

async fn read_check(tx: &Transaction<'_>) -> Result<Option<Check>, String> {
    Ok(tx
        .query_opt("SELECT key_id, check_value FROM sealing WHERE id = 1", &[])
        .await
        .map_err(fail)?
        .map(|r| Check {
            key_id: r.get(0),
            value: r.get(1),
        }))
}

async fn write_check(tx: &Transaction<'_>, check: &Check) -> Result<(), String> {
    tx.execute(
        "INSERT INTO sealing (id, key_id, check_value) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id, check_value = excluded.check_value",
        &[&check.key_id, &check.value],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

/// Re-seals endpoints' settings read with `old` under `new` (only those in the clear
/// when `plain_only`); returns how many.
async fn reseal(
    tx: &Transaction<'_>,
    old: &Sealer,
    new: &Sealer,
    plain_only: bool,
) -> Result<usize, String> {
    // The clear form's marker (see `sealing::is_plain`) found by text, without parsing
    // every endpoint's JSON at each start.
    let filter = if plain_only {
        "WHERE strpos(settings, '\"secrets\":[') > 0"
    } else {
        ""
    };
    let rows = tx
        .query(&format!("SELECT id, settings FROM endpoints {filter}"), &[])
        .await
        .map_err(fail)?;
    let update = tx
        .prepare("UPDATE endpoints SET settings = $2 WHERE id = $1")
        .await
        .map_err(fail)?;
    let mut count = 0;
    for row in rows {
        let (id, stored): (String, &str) = (row.get(0), row.get(1));
        if plain_only && !sealing::is_plain(stored) {
            continue;
        }
        let settings = old
            .open_settings(&id, stored)
            .map_err(|why| format!("endpoint {id}: {why}"))?;
        tx.execute(&update, &[&id, &new.seal_settings(&id, &settings)])
            .await
            .map_err(fail)?;
        count += 1;
    }
    Ok(count)
}

/// `hookline rotate-key` on PostgreSQL: unlocks the database with `old`, then re-seals
/// every endpoint under `new` and stores its check value, in one transaction. Returns
/// how many endpoints were re-sealed. Processes still running with the old key cannot
/// read endpoints afterwards: stop them first, start them with the new key after.
pub async fn rotate_key(url: &str, old: &KeySource, new: &MainKey) -> Result<usize, String> {
    let settings = PgSettings::parse(url)?;
    let pool = connect(&settings, 1).await?;
    migrate(&pool).await?;
    let old = seal_in_place(&pool, old).await?;
    let new = Sealer::new(new);
    let mut client = pool.get().await.map_err(|e| format!("PostgreSQL: {e}"))?;
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let count = reseal(&tx, &old, &new, false).await?;
    write_check(&tx, &new.check()).await?;
    tx.commit().await.map_err(fail)?;
    Ok(count)
}
