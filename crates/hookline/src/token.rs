//! `hookline token create|list|revoke`: managed API tokens, straight in the database.
//!
//! The same records `POST/GET/DELETE /api/v1/auth/token` manage, written without a
//! server, so an operator who lost every admin token (or has not started the server yet)
//! can make one. Whoever can run this can read the database anyway; it adds no power.

use std::sync::Arc;

use hookline_api::auth::{check_new_token, mint_token, NewToken, TokenOut};
use hookline_config::{Database, MigrateArgs, TokenAction, TokenArgs};
use hookline_store::sqlite::TokenTable;
use hookline_store::{ApiToken, Store, StoreError, TOKEN_ID_BYTES};

/// Runs the subcommand and returns the process's exit code: 0 done, 1 it failed, 2 the
/// flags are wrong.
pub async fn run(args: &TokenArgs) -> i32 {
    match act(&args.action).await {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("hookline: {message}");
            code
        }
    }
}

type Failed = (i32, String);

async fn act(action: &TokenAction) -> Result<(), Failed> {
    match action {
        TokenAction::Create(a) => {
            let mut new = NewToken {
                name: a.name.clone(),
                app_id: None,
                read_only: a.read_only,
                expiry_secs: a.expires_in.map(|d| d.as_secs().max(1)),
            };
            check_new_token(&new).map_err(|(field, why)| {
                let flag = if field == "expiry" {
                    "expires-in"
                } else {
                    field
                };
                (2, format!("--{flag}: {why}"))
            })?;
            let tokens = Tokens::open(&a.database).await?;
            if let Some(app) = &a.app {
                let found =
                    tokens.app_id(app).await.map_err(failed)?.ok_or_else(|| {
                        (1, format!("--app: no application has the id or uid {app}"))
                    })?;
                new.app_id = Some(found);
            }
            let (text, record) = mint_token(&new, hookline_store::now());
            let id = record.id();
            tokens.insert(record).await.map_err(failed)?;
            eprintln!("hookline: created token {id}; it is shown only this once:");
            println!("{text}");
            Ok(())
        }
        TokenAction::List(a) => {
            let tokens = Tokens::open(&a.database).await?;
            let list = tokens.list().await.map_err(failed)?;
            print!("{}", table(list.into_iter().map(TokenOut::from).collect()));
            Ok(())
        }
        TokenAction::Revoke(a) => {
            let id = hookline_store::parse_token_id(&a.id).ok_or_else(|| {
                (
                    2,
                    format!(
                        "{} is no token id (tok_ and 24 hex digits, as `hookline token list` shows)",
                        a.id
                    ),
                )
            })?;
            let tokens = Tokens::open(&a.database).await?;
            match tokens.revoke(id).await {
                Ok(()) => {
                    println!("hookline: revoked {}", a.id);
                    Ok(())
                }
                Err(StoreError::NotFound) => Err((1, format!("no token has the id {}", a.id))),
                Err(e) => Err(failed(e)),
            }
        }
    }
}

fn failed(e: StoreError) -> Failed {
    (1, e.to_string())
}

/// Where the tokens are: SQLite through its side door (a server may be running on the
/// file: see [`TokenTable`]), or a PostgreSQL store.
enum Tokens {
    Sqlite(Arc<std::sync::Mutex<TokenTable>>),
    Postgres(Box<dyn Store>),
}

impl Tokens {
    /// Opens (and, if need be, migrates) the database the flags name.
    async fn open(args: &MigrateArgs) -> Result<Self, Failed> {
        let key = hookline_config::migrate_sealing(args)
            .map_err(|e| e.to_string())
            .and_then(|(key, dir)| crate::key_source(key.as_deref(), &dir))
            .map_err(|e| (2, e))?;
        match hookline_config::migrate_database(args).map_err(|e| (2, e.to_string()))? {
            Database::Sqlite(path) => {
                let p = path.clone();
                let table = tokio::task::spawn_blocking(move || TokenTable::open(&p, &key))
                    .await
                    .map_err(|e| (1, e.to_string()))?
                    .map_err(|e| {
                        (
                            1,
                            format!("cannot open the SQLite database {}: {e}", path.display()),
                        )
                    })?;
                Ok(Tokens::Sqlite(Arc::new(std::sync::Mutex::new(table))))
            }
            Database::Postgres(url) => {
                let store = hookline_store::postgres::PgStore::connect(&url, 2, &key)
                    .await
                    .map_err(|e| (1, e))?;
                Ok(Tokens::Postgres(Box::new(store)))
            }
        }
    }

    /// Runs `f` on the SQLite table off the async threads.
    async fn on_sqlite<T: Send + 'static>(
        table: &Arc<std::sync::Mutex<TokenTable>>,
        f: impl FnOnce(&TokenTable) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let table = table.clone();
        tokio::task::spawn_blocking(move || f(&table.lock().unwrap_or_else(|e| e.into_inner())))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn app_id(&self, id_or_uid: &str) -> Result<Option<String>, StoreError> {
        match self {
            Tokens::Sqlite(t) => {
                let key = id_or_uid.to_string();
                Self::on_sqlite(t, move |t| t.app_id(&key)).await
            }
            Tokens::Postgres(s) => Ok(s.get_app(id_or_uid).await?.map(|a| a.id)),
        }
    }

    async fn insert(&self, token: ApiToken) -> Result<(), StoreError> {
        match self {
            Tokens::Sqlite(t) => Self::on_sqlite(t, move |t| t.insert(&token)).await,
            Tokens::Postgres(s) => s.insert_token(token).await,
        }
    }

    async fn list(&self) -> Result<Vec<ApiToken>, StoreError> {
        let now = hookline_store::now();
        match self {
            Tokens::Sqlite(t) => Self::on_sqlite(t, move |t| t.list(now)).await,
            Tokens::Postgres(s) => s.list_tokens(now).await,
        }
    }

    async fn revoke(&self, id: [u8; TOKEN_ID_BYTES]) -> Result<(), StoreError> {
        match self {
            Tokens::Sqlite(t) => Self::on_sqlite(t, move |t| t.revoke(&id)).await,
            Tokens::Postgres(s) => s.revoke_token(&id).await,
        }
    }
}

/// The listing as aligned columns, one token a line.
fn table(tokens: Vec<TokenOut>) -> String {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M:%SZ").to_string()
        })
    };
    let mut rows = vec![[
        "ID",
        "NAME",
        "PREFIX",
        "SCOPE",
        "ACCESS",
        "CREATED",
        "LAST USED",
        "EXPIRES",
    ]
    .map(String::from)];
    for t in tokens {
        rows.push([
            t.id,
            t.name.unwrap_or_else(|| "-".into()),
            t.prefix.unwrap_or_else(|| "-".into()),
            t.app_id.unwrap_or_else(|| t.scope.to_string()),
            if t.read_only {
                "read-only"
            } else {
                "read-write"
            }
            .into(),
            time(Some(t.created_at)),
            time(t.last_used_at),
            time(t.expires_at),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
