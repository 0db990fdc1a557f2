//! Operational webhooks: hookline telling the operator about trouble (`endpoint.disabled`,
//! `message.attempt.failing` on the 4th consecutive failure, `message.attempt.exhausted`,
//! `message.attempt.recovered`).
//!
//! They travel the same durable, signed, retried path as every other webhook: they are
//! messages of an internal application (uid `hookline-operational`) whose one endpoint is
//! the configured URL. Attempts to that application never raise operational events
//! themselves, so a dead operator URL cannot feed itself.

use std::sync::Arc;

use anyhow::Context;
use hookline_delivery::dispatcher::{AttemptObserver, Observed};
use hookline_store::{
    new_id, now, Application, Attempt, ClaimedDelivery, Endpoint, EndpointSettings, Message,
    NextStep, SecretEntry, Store, StoreError,
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
    pub store: Arc<dyn Store>,
    pub app_id: String,
}

impl Notifier {
    fn events(
        &self,
        d: &ClaimedDelivery,
        a: &Attempt,
        o: &Observed,
    ) -> Vec<(&'static str, serde_json::Value)> {
        let mut out = Vec::new();
        let ep = &d.endpoint;
        let last_attempt = json!({
            "id": a.id,
            "timestamp": a.attempted_at,
            "responseStatusCode": a.status_code.unwrap_or(0),
        });
        let attempt_data = json!({
            "appId": d.message.app_id,
            "msgId": d.message.id,
            "msgEventId": d.message.event_id,
            "endpointId": ep.id,
            "endpointUid": ep.uid,
            "lastAttempt": last_attempt,
        });
        if o.endpoint_disabled {
            out.push((
                "endpoint.disabled",
                json!({
                    "appId": d.message.app_id,
                    "endpointId": ep.id,
                    "endpointUid": ep.uid,
                    "trigger": "automatic",
                    "lastAttempt": last_attempt,
                }),
            ));
        }
        if !a.succeeded && o.consecutive_failures == FAILING_AT {
            out.push(("message.attempt.failing", attempt_data.clone()));
        }
        if o.next == NextStep::Failed {
            out.push(("message.attempt.exhausted", attempt_data.clone()));
        }
        if a.succeeded && d.attempts >= FAILING_AT {
            out.push(("message.attempt.recovered", attempt_data));
        }
        out
    }
}

/// The `eventId` of an operational message: the event's kind and the attempt that raised
/// it, named by message, endpoint and the attempt's number in its delivery. Whoever
/// makes that attempt (a node that took an expired lease over, or the node that held the
/// lease and reports late, its lease lost) raises the same event, and the application's
/// unique `eventId`s keep it to one message. A later attempt (a retry, a resend) has a
/// number of its own.
fn event_id(kind: &str, d: &ClaimedDelivery) -> String {
    format!(
        "{kind}.{}.{}.{}",
        d.message.id,
        d.endpoint.id,
        d.attempts + 1
    )
}

impl AttemptObserver for Notifier {
    fn attempted(&self, d: &ClaimedDelivery, a: &Attempt, o: &Observed) {
        // A stalled worker's late report changed nothing: the worker that holds the
        // delivery now raises what its own attempts call for.
        if d.message.app_id == self.app_id || o.lease_lost {
            return;
        }
        let events: Vec<_> = self
            .events(d, a, o)
            .into_iter()
            .map(|(kind, data)| (kind, event_id(kind, d), data))
            .collect();
        if events.is_empty() {
            return;
        }
        let store = self.store.clone();
        let app_id = self.app_id.clone();
        tokio::spawn(async move {
            for (kind, event_id, data) in events {
                let t = now();
                let payload = json!({"type": kind, "timestamp": t, "data": data});
                let msg = Message {
                    id: new_id("msg"),
                    app_id: app_id.clone(),
                    event_id: Some(event_id.clone()),
                    event_type: kind.into(),
                    payload: payload.to_string().into(),
                    channels: None,
                    tags: None,
                    created_at: t,
                    deliver_at: None,
                };
                match store.create_message(msg).await {
                    Ok(_) => {}
                    // Raised already, by whoever else made or reported this attempt.
                    Err(StoreError::Conflict(_)) => {
                        tracing::debug!(event = kind, %event_id, "operational webhook already queued")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, event = kind, "could not queue operational webhook")
                    }
                }
            }
        });
    }
}
