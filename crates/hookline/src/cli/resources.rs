//! `hookline app`, `endpoint`, `event-type` and `send`: one API call each, printed.

use anyhow::anyhow;
use hookline_config::{
    AppArgs, AppCommand, EndpointAddArgs, EndpointArgs, EndpointCommand, EventTypeArgs,
    EventTypeCommand, ListArgs, SendArgs,
};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{print_list, print_object, read_json_arg, Client};

fn page_query(list: &ListArgs) -> Vec<(&'static str, String)> {
    let mut q = vec![("limit", list.limit.to_string())];
    if let Some(it) = &list.iterator {
        q.push(("iterator", it.clone()));
    }
    q
}

pub async fn app(args: AppArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api)?;
    match args.command {
        AppCommand::Create { name, uid } => {
            let mut body = json!({ "name": name });
            if let Some(uid) = uid {
                body["uid"] = uid.into();
            }
            let app = c.send_json(Method::POST, &["app"], &body).await?;
            print_object(c.json, &app);
        }
        AppCommand::List(list) => {
            let page = c.get_query(&["app"], &page_query(&list)).await?;
            print_list(
                c.json,
                &page,
                &[
                    ("id", "ID"),
                    ("uid", "UID"),
                    ("name", "NAME"),
                    ("createdAt", "CREATED"),
                ],
            );
        }
        AppCommand::Get { app } => print_object(c.json, &c.get(&["app", &app]).await?),
        AppCommand::Delete { app } => {
            c.call(Method::DELETE, c.url(&["app", &app]), None).await?;
            done(c.json, "deleted", &app, "application");
        }
    }
    Ok(())
}

/// The answer of a call that returns nothing: a sentence, or `{"<what>": id}` for scripts.
fn done(json: bool, what: &str, id: &str, kind: &str) {
    if json {
        outln!("{}", json!({ what: id }));
    } else {
        outln!("{what} {kind} {id}");
    }
}

pub async fn endpoint(args: EndpointArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api)?;
    match args.command {
        EndpointCommand::Add(add) => {
            let body = endpoint_body(&add)?;
            let ep = c
                .send_json(Method::POST, &["app", &add.app, "endpoint"], &body)
                .await?;
            print_object(c.json, &ep);
        }
        EndpointCommand::List { app, list } => {
            let page = c
                .get_query(&["app", &app, "endpoint"], &page_query(&list))
                .await?;
            print_list(
                c.json,
                &page,
                &[
                    ("id", "ID"),
                    ("uid", "UID"),
                    ("url", "URL"),
                    ("disabled", "DISABLED"),
                    ("filterTypes", "EVENT TYPES"),
                ],
            );
        }
        EndpointCommand::Get { app, endpoint } => {
            print_object(c.json, &c.get(&["app", &app, "endpoint", &endpoint]).await?)
        }
        EndpointCommand::Secret { app, endpoint } => {
            let s = c
                .get(&["app", &app, "endpoint", &endpoint, "secret"])
                .await?;
            print_secret(c.json, &s)?;
        }
        EndpointCommand::Rotate {
            app,
            endpoint,
            key,
            grace_period,
        } => {
            let mut body = json!({});
            if let Some(key) = key {
                body["key"] = key.into();
            }
            if let Some(g) = grace_period {
                body["gracePeriodSeconds"] = g.into();
            }
            let s = c
                .send_json(
                    Method::POST,
                    &["app", &app, "endpoint", &endpoint, "secret", "rotate"],
                    &body,
                )
                .await?;
            print_secret(c.json, &s)?;
        }
        EndpointCommand::Disable { app, endpoint } => {
            set_disabled(&c, &app, &endpoint, true).await?
        }
        EndpointCommand::Enable { app, endpoint } => {
            set_disabled(&c, &app, &endpoint, false).await?
        }
    }
    Ok(())
}

/// The secret alone on its line (for `$(hookline endpoint secret ...)`), or `{"key": ...}`.
fn print_secret(json: bool, s: &Value) -> anyhow::Result<()> {
    let key = s["key"]
        .as_str()
        .ok_or_else(|| anyhow!("hookline's answer has no `key`"))?;
    if json {
        outln!("{}", json!({ "key": key }));
    } else {
        outln!("{key}");
    }
    Ok(())
}

async fn set_disabled(c: &Client, app: &str, endpoint: &str, disabled: bool) -> anyhow::Result<()> {
    let ep = c
        .send_json(
            Method::PATCH,
            &["app", app, "endpoint", endpoint],
            &json!({ "disabled": disabled }),
        )
        .await?;
    if c.json {
        outln!("{ep}");
    } else {
        let id = ep["id"].as_str().unwrap_or(endpoint);
        outln!(
            "{} endpoint {id}",
            if disabled { "disabled" } else { "enabled" }
        );
    }
    Ok(())
}

/// The endpoint's JSON from the flags, with `--with`'s fields merged over them.
fn endpoint_body(add: &EndpointAddArgs) -> anyhow::Result<Value> {
    let mut body = Map::new();
    body.insert("url".into(), add.endpoint_url.clone().into());
    if !add.event_types.is_empty() {
        body.insert("filterTypes".into(), add.event_types.clone().into());
    }
    if !add.channels.is_empty() {
        body.insert("channels".into(), add.channels.clone().into());
    }
    for (field, value) in [
        ("description", &add.description),
        ("uid", &add.uid),
        ("secret", &add.secret),
    ] {
        if let Some(v) = value {
            body.insert(field.into(), v.clone().into());
        }
    }
    if let Some(header) = &add.hmac_header {
        body.insert(
            "signature".into(),
            json!({"scheme": "hmac-sha256-hex", "header": header}),
        );
    }
    if let Some(with) = &add.with {
        let extra = read_json_arg("--with", with)?;
        let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(extra.get()) else {
            return Err(anyhow!("--with must be a JSON object of endpoint fields"));
        };
        body.extend(extra);
    }
    Ok(Value::Object(body))
}

pub async fn event_type(args: EventTypeArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api)?;
    match args.command {
        EventTypeCommand::Add {
            name,
            description,
            schema,
        } => {
            let mut body = json!({"name": name, "description": description});
            if let Some(schema) = schema {
                let schema: Value =
                    serde_json::from_str(read_json_arg("--schema", &schema)?.get())?;
                body["schemas"] = json!({ "1": schema });
            }
            let et = c.send_json(Method::POST, &["event-type"], &body).await?;
            print_object(c.json, &et);
        }
        EventTypeCommand::List(list) => {
            let page = c.get_query(&["event-type"], &page_query(&list)).await?;
            print_list(
                c.json,
                &page,
                &[
                    ("name", "NAME"),
                    ("description", "DESCRIPTION"),
                    ("archived", "ARCHIVED"),
                    ("createdAt", "CREATED"),
                ],
            );
        }
    }
    Ok(())
}

/// The message as the API takes it, with the payload's bytes exactly as given (hookline
/// signs and delivers them as stored, so they are not re-serialized here either).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageIn<'a> {
    event_type: &'a str,
    payload: &'a serde_json::value::RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    channels: &'a [String],
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api)?;
    let payload = read_json_arg("--payload", &args.payload)?;
    let body = serde_json::to_string(&MessageIn {
        event_type: &args.event_type,
        payload: &payload,
        event_id: args.event_id.as_deref(),
        channels: &args.channels,
    })?;
    let msg = c
        .call(Method::POST, c.url(&["app", &args.app, "msg"]), Some(body))
        .await?;
    if c.json {
        outln!("{msg}");
    } else {
        let mut shown = msg.clone();
        // The payload was the caller's own input; the rest is what they need (the id).
        if let Some(obj) = shown.as_object_mut() {
            obj.remove("payload");
        }
        print_object(false, &shown);
    }
    Ok(())
}
