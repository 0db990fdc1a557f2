//! `hookline rotate-key`: re-seals every endpoint's secrets under a new main key.
//!
//! With the key in the key file, a new key is generated and the file rewritten in two
//! steps around the database's one transaction: first the new key and the old one (so
//! a crash on either side of the commit leaves a file holding the key the database is
//! sealed under), then the new key alone. With `--encryption-key`, the new key comes
//! from `--new-key`, and the operator starts hookline with it afterwards. Keys are never
//! printed; only their ids (a hash prefix) are.

use hookline_config::{Database, RotateKeyArgs};
use hookline_store::sealing::{self, KeySource, MainKey};

/// Runs the command and returns the process's exit code: 0 done, 1 it failed, 2 the
/// flags are wrong.
pub async fn run(args: &RotateKeyArgs) -> i32 {
    match rotate(args).await {
        Ok(message) => {
            println!("hookline: {message}");
            0
        }
        Err((code, message)) => {
            eprintln!("hookline: {message}");
            code
        }
    }
}

async fn rotate(args: &RotateKeyArgs) -> Result<String, (i32, String)> {
    let usage = |e: String| (2, e);
    let database =
        hookline_config::migrate_database(&args.database).map_err(|e| usage(e.to_string()))?;
    let (given, dir) =
        hookline_config::migrate_sealing(&args.database).map_err(|e| usage(e.to_string()))?;
    let old = crate::key_source(given.as_deref(), &dir).map_err(usage)?;
    let new = args
        .new_key
        .as_deref()
        .map(MainKey::parse)
        .transpose()
        .map_err(|why| usage(format!("--new-key (HOOKLINE_NEW_ENCRYPTION_KEY) {why}")))?;
    let (new, file) = match (&old, new) {
        (KeySource::Given(_), None) => {
            return Err(usage(
                "the current key is given with --encryption-key: give the new one with --new-key (HOOKLINE_NEW_ENCRYPTION_KEY), e.g. from `openssl rand -base64 32`".into(),
            ))
        }
        (KeySource::Given(_), Some(new)) => (new, None),
        (KeySource::File(path), new) => {
            let held = sealing::read_key_file(path).map_err(|e| (1, e))?;
            if held.is_empty() {
                return Err((
                    1,
                    format!(
                        "there is no key file at {} (and no --encryption-key): nothing to rotate from",
                        path.display()
                    ),
                ));
            }
            let new = new.unwrap_or_else(MainKey::generate);
            // The new key first, every key held after it: whichever way the re-sealing
            // ends, the file holds the key the database is sealed under.
            let mut keys = vec![&new];
            keys.extend(held.iter());
            sealing::write_key_file(path, &keys).map_err(|e| (1, e))?;
            (new, Some(path.clone()))
        }
    };
    let count = match &database {
        Database::Sqlite(path) => {
            let (path, old, new) = (path.clone(), old.clone(), new.clone());
            tokio::task::spawn_blocking(move || {
                hookline_store::sqlite::rotate_key(&path, &old, &new)
            })
            .await
            .map_err(|e| (1, e.to_string()))?
            .map_err(|e| (1, e.to_string()))?
        }
        Database::Postgres(url) => hookline_store::postgres::rotate_key(url, &old, &new)
            .await
            .map_err(|e| (1, e))?,
    };
    let endpoints = match count {
        1 => "1 endpoint".to_string(),
        n => format!("{n} endpoints"),
    };
    match file {
        Some(path) => {
            sealing::write_key_file(&path, &[&new]).map_err(|e| (1, e))?;
            Ok(format!(
                "re-sealed the secrets of {endpoints} under key {}; {} now holds it (the old key is gone: backups made before now need the old key file)",
                new.id(),
                path.display()
            ))
        }
        None => Ok(format!(
            "re-sealed the secrets of {endpoints} under key {}; start hookline with it as --encryption-key (HOOKLINE_ENCRYPTION_KEY)",
            new.id()
        )),
    }
}
