//! Operational webhooks: hookline telling the operator about trouble (`endpoint.disabled`,
//! `message.attempt.failing` on the 4th consecutive failure, `message.attempt.exhausted`,
//! `message.attempt.recovered`).
//!
//! They travel the same durable, signed, retried path as every other webhook: they are
//! messages of an internal application (uid `hookline-operational`) whose one endpoint is
//! the configured URL. Attempts to that application never raise operational events
//! themselves, so a dead operator URL cannot feed itself.
//!
//! Each event is raised exactly once, for the cluster: the store writes it in the same
//! transaction as the attempt's report that causes it ([`Raise`]), and its `eventId`
//! names that attempt, so a node that makes the attempt again after a takeover raises
//! the same event, which the application's unique `eventId`s keep to one message.

use std::sync::Arc;

use anyhow::Context;
use hookline_delivery::dispatcher::AttemptObserver;
use hookline_store::{
    new_id, now, Application, Attempt, ClaimedDelivery, Endpoint, EndpointSettings, Message,
    NextStep, Raise, ReportOutcome, SecretEntry, Store, StoreError,
};
use serde_json::json;

pub const APP_UID: &str = "hookline-operational";
const ENDPOINT_UID: &str = "operator";
/// The failure count that raises `message.attempt.failing`.
const FAILING_AT: u32 = 4;

/// Creates or updates the internal application and its endpoint; returns the app id.
pub async fn setup(store: &dyn Store, url: &str, secret: Option<&str>) -> anyhow::Result<String> {
    if let Some(s) = secret {
        hookline_signing::StandardSecret::parse(s)
            .map_err(|e| anyhow::anyhow!("operational_webhook_secret: {e}"))?;
    }
    // Nodes sharing a database may start at the same instant and all find nothing: one
    // makes the application (its uid is unique), the others take what it made.
    let app = match store.get_app(APP_UID).await? {
        Some(a) => a,
        None => {
            let t = now();
            let made = store
                .create_app(Application {
                    id: new_id("app"),
                    uid: Some(APP_UID.into()),
                    name: "hookline operational webhooks".into(),
                    throttle_rate: None,
                    metadata: Default::default(),
                    retry_policy: None,
                    validate_payloads: false,
                    created_at: t,
                    updated_at: t,
                })
                .await;
            match made {
                Ok(a) => a,
                Err(StoreError::Conflict(_)) => store.get_app(APP_UID).await?.context(
                    "the operational webhooks application another process made vanished",
                )?,
                Err(e) => return Err(e).context("creating the operational webhooks application"),
            }
        }
    };
    let url = url.to_string();
    let secret = secret.map(str::to_string);
    // Likewise the endpoint: made here, or made by another process (this one's or just
    // now), then brought to this process's settings.
    let existing = match store.get_endpoint(&app.id, ENDPOINT_UID).await? {
        Some(ep) => ep,
        None => {
            let t = now();
            let key = secret
                .clone()
                .unwrap_or_else(|| hookline_signing::StandardSecret::generate().to_string());
            let made = store
                .create_endpoint(Endpoint {
                    id: new_id("ep"),
                    app_id: app.id.clone(),
                    uid: Some(ENDPOINT_UID.into()),
                    url: url.clone(),
                    disabled: false,
                    settings: EndpointSettings {
                        description: "operational webhooks".into(),
                        secrets: vec![SecretEntry {
                            key,
                            expires_at: None,
                        }],
                        ..Default::default()
                    },
                    created_at: t,
                    updated_at: t,
                    failing_since: None,
                })
                .await;
            match made {
                Ok(_) => return Ok(app.id),
                Err(StoreError::Conflict(_)) => store
                    .get_endpoint(&app.id, ENDPOINT_UID)
                    .await?
                    .context("the operational webhooks endpoint another process made vanished")?,
                Err(e) => return Err(e).context("creating the operational webhooks endpoint"),
            }
        }
    };
    store
        .update_endpoint(
            &app.id,
            &existing.id,
            Box::new(move |ep| {
                ep.url = url;
                ep.disabled = false;
                if let Some(s) = secret {
                    if ep.current_secret() != Some(s.as_str()) {
                        ep.settings.secrets = vec![SecretEntry {
                            key: s,
                            expires_at: None,
                        }];
                    }
                }
                Ok(())
            }),
        )
        .await?;
    Ok(app.id)
}

/// Turns attempt outcomes into operational events.
pub struct Notifier {
    pub app_id: String,
}

/// What an operational event says about the attempt that raised it.
struct Cause {
    app_id: String,
    msg_id: String,
    msg_event_id: Option<String>,
    endpoint_id: String,
    endpoint_uid: Option<String>,
    /// The attempt's number in its delivery (1 for the first).
    number: u32,
    attempt_id: String,
    attempted_at: chrono::DateTime<chrono::Utc>,
    status_code: Option<u16>,
    succeeded: bool,
    exhausted: bool,
}

impl Cause {
    /// The events the attempt raises, given what its report did.
    fn events(&self, outcome: &ReportOutcome) -> Vec<(&'static str, serde_json::Value)> {
        let mut out = Vec::new();
        let last_attempt = json!({
            "id": self.attempt_id,
            "timestamp": self.attempted_at,
            "responseStatusCode": self.status_code.unwrap_or(0),
        });
        let attempt_data = json!({
            "appId": self.app_id,
            "msgId": self.msg_id,
            "msgEventId": self.msg_event_id,
            "endpointId": self.endpoint_id,
            "endpointUid": self.endpoint_uid,
            "lastAttempt": last_attempt,
        });
        if outcome.endpoint_disabled {
            out.push((
                "endpoint.disabled",
                json!({
                    "appId": self.app_id,
                    "endpointId": self.endpoint_id,
                    "endpointUid": self.endpoint_uid,
                    "trigger": "automatic",
                    "lastAttempt": last_attempt,
                }),
            ));
        }
        if !self.succeeded && outcome.consecutive_failures == FAILING_AT {
            out.push(("message.attempt.failing", attempt_data.clone()));
        }
        if self.exhausted {
            out.push(("message.attempt.exhausted", attempt_data.clone()));
        }
        if self.succeeded && self.number > FAILING_AT {
            out.push(("message.attempt.recovered", attempt_data));
        }
        out
    }

    /// The `eventId` of an operational message: the event's kind and the attempt that
    /// raised it, named by message, endpoint and the attempt's number in its delivery.
    /// Whoever makes that attempt raises the same event (a node that took an expired
    /// lease over makes the attempt again, under the same number), and the application's
    /// unique `eventId`s keep it to one message. A later attempt (a retry, a resend) has
    /// a number of its own.
    fn event_id(&self, kind: &str) -> String {
        format!(
            "{kind}.{}.{}.{}",
            self.msg_id, self.endpoint_id, self.number
        )
    }
}

impl AttemptObserver for Notifier {
    fn raises(&self, d: &ClaimedDelivery, a: &Attempt, next: &NextStep) -> Option<Raise> {
        // Attempts to the operator's own endpoint raise nothing: a dead operator URL
        // cannot feed itself.
        if d.message.app_id == self.app_id {
            return None;
        }
        let number = d.attempts + 1;
        // Only a failure, or a success after failures, can raise anything: every other
        // report goes without (and, on PostgreSQL, in the shared write batch).
        if a.succeeded && number <= FAILING_AT {
            return None;
        }
        let cause = Cause {
            app_id: d.message.app_id.clone(),
            msg_id: d.message.id.clone(),
            msg_event_id: d.message.event_id.clone(),
            endpoint_id: d.endpoint.id.clone(),
            endpoint_uid: d.endpoint.uid.clone(),
            number,
            attempt_id: a.id.clone(),
            attempted_at: a.attempted_at,
            status_code: a.status_code,
            succeeded: a.succeeded,
            exhausted: *next == NextStep::Failed,
        };
        let app_id = self.app_id.clone();
        Some(Raise(Arc::new(move |outcome: &ReportOutcome| {
            cause
                .events(outcome)
                .into_iter()
                .map(|(kind, data)| {
                    let t = now();
                    Message {
                        id: new_id("msg"),
                        app_id: app_id.clone(),
                        event_id: Some(cause.event_id(kind)),
                        event_type: kind.into(),
                        payload: json!({"type": kind, "timestamp": t, "data": data})
                            .to_string()
                            .into(),
                        channels: None,
                        tags: None,
                        created_at: t,
                        deliver_at: None,
                        payload_expires_at: None,
                    }
                })
                .collect()
        })))
    }
}
