//! What both backends share beside the [`Store`](crate::Store) contract itself: the
//! walk of a cursor-paginated listing, the fresh deliveries a create hands to an
//! [`Intake`], and how many deliveries a claim may take from one endpoint. Each backend
//! keeps its own SQL; the rules live here once.

use std::sync::Arc;

use crate::*;

/// Where a listing page starts and which way it walks.
pub(crate) struct Walk {
    pub(crate) cursor: Option<String>,
    /// `iterator` was a `prev_iterator`: the page before the cursor.
    pub(crate) backwards: bool,
    /// The direction of the scan: walking backwards through an ascending list is a
    /// descending scan, and vice versa.
    pub(crate) ascending: bool,
}

impl Walk {
    pub(crate) fn new(q: &ListQuery) -> Self {
        let (cursor, backwards) = match q.iterator.as_deref() {
            Some(it) if it.starts_with('-') => (Some(it[1..].to_string()), true),
            Some(it) => (Some(it.to_string()), false),
            None => (None, false),
        };
        let ascending = (q.order == Order::Ascending) != backwards;
        Walk {
            cursor,
            backwards,
            ascending,
        }
    }

    /// The comparison that keeps the rows past the cursor.
    pub(crate) fn past(&self) -> &'static str {
        if self.ascending {
            ">"
        } else {
            "<"
        }
    }

    pub(crate) fn dir(&self) -> &'static str {
        if self.ascending {
            "ASC"
        } else {
            "DESC"
        }
    }

    /// The page from up to `limit + 1` rows in scan order.
    pub(crate) fn page<T>(
        self,
        mut rows: Vec<T>,
        limit: usize,
        key_of: impl Fn(&T) -> String,
    ) -> Page<T> {
        let more = rows.len() > limit;
        rows.truncate(limit);
        if self.backwards {
            rows.reverse();
        }
        let first = rows.first().map(&key_of);
        let last = rows.last().map(&key_of);
        Page {
            iterator: last.or_else(|| self.cursor.clone()),
            prev_iterator: first.map(|f| format!("-{f}")),
            done: if self.backwards { false } else { !more },
            data: rows,
        }
    }
}

/// Fresh deliveries of one create on their way from the transaction to the worker. Each
/// one in `claimed` holds a slot the intake reserved; dropped without
/// [`Fresh::hand_over`] (the write failed or did not commit), it gives them back.
pub(crate) struct Fresh {
    pub(crate) intake: Option<Arc<dyn Intake>>,
    pub(crate) claimed: Vec<ClaimedDelivery>,
    /// Whether a delivery was queued `pending` instead of handed over.
    pub(crate) queued: bool,
}

impl Fresh {
    pub(crate) fn new(intake: Option<Arc<dyn Intake>>) -> Self {
        Self {
            intake,
            claimed: Vec::new(),
            queued: false,
        }
    }

    /// Files a fresh delivery of `msg` to `ep` that the intake reserved a slot for, under
    /// `token`, starting at `start`, with `shared` attempts to `ep` in flight across
    /// processes before it ([`ClaimedDelivery::in_flight_shared`]); its id is set once it
    /// is written. Filed before the insert, so a failure from here on gives the slot back.
    pub(crate) fn file(
        &mut self,
        msg: &Message,
        ep: &Endpoint,
        token: &str,
        start: DateTime<Utc>,
        app: &AppLimits,
        shared: usize,
    ) {
        self.claimed.push(ClaimedDelivery {
            id: 0,
            lease_token: token.to_string(),
            attempts: 0,
            scheduled_at: start,
            created_at: start,
            trigger: Trigger::Scheduled,
            message: msg.clone(),
            endpoint: ep.clone(),
            app_retry_policy: app.policy.clone(),
            app_throttle_rate: app.rate,
            start_at: None,
            in_flight_shared: u32::try_from(shared).unwrap_or(u32::MAX),
        });
    }

    /// The message is durable: the worker gets its deliveries.
    pub(crate) fn hand_over(mut self) {
        if let Some(intake) = &self.intake {
            if !self.claimed.is_empty() {
                intake.take(std::mem::take(&mut self.claimed));
            }
            if self.queued {
                intake.queued();
            }
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let (Some(intake), false) = (&self.intake, self.claimed.is_empty()) {
            intake.cancel(self.claimed.drain(..).map(|d| d.endpoint.id).collect());
        }
    }
}

/// An application's delivery settings, as a claim needs them.
#[derive(Default, Clone)]
pub(crate) struct AppLimits {
    pub(crate) policy: Option<hookline_retry::RetryPolicy>,
    pub(crate) rate: Option<u32>,
    /// Deliveries of the application taken so far in this claim.
    pub(crate) claimed: usize,
}

/// How many due deliveries a claim may take from `ep` now: within its concurrency cap
/// under the worker's `limit` less the attempts in flight to it (`in_flight`: the
/// worker's, or every process's where they share the store, if that is more), the claim's `remaining` room, the
/// room left for failing endpoints (`failing_room`, for a failing one), and a second's
/// worth of its own and its application's `throttleRate` (the dispatcher paces them, and
/// what waits for its turn holds a lease and a slot).
pub(crate) fn claimable(
    ep: &Endpoint,
    in_flight: usize,
    limit: Option<usize>,
    remaining: usize,
    failing_room: usize,
    app: &AppLimits,
) -> usize {
    let mut free = ep
        .concurrency_cap_within(limit)
        .saturating_sub(in_flight)
        .min(remaining);
    if ep.is_failing() {
        free = free.min(failing_room);
    }
    if let Some(rate) = ep.settings.throttle_rate.filter(|r| *r > 0) {
        free = free.min(rate as usize);
    }
    if let Some(rate) = app.rate {
        free = free.min((rate as usize).saturating_sub(app.claimed));
    }
    free
}

#[cfg(test)]
mod walk_props {
    //! The cursor walk against an in-memory "table" that answers as the SQL does (rows
    //! past the cursor in scan order, `limit + 1` of them): forward pages visit every row
    //! once, in order; `prev_iterator` leads back to the page before; any iterator text
    //! is an answer, never a panic.

    use proptest::prelude::*;

    use super::Walk;
    use crate::{ListQuery, Order, Page};

    /// One page of `keys` (sorted, unique) for `q`.
    fn page(keys: &[String], q: &ListQuery) -> Page<String> {
        let walk = Walk::new(q);
        let mut rows: Vec<String> = keys
            .iter()
            .filter(|k| match &walk.cursor {
                None => true,
                Some(c) if walk.ascending => k.as_str() > c.as_str(),
                Some(c) => k.as_str() < c.as_str(),
            })
            .cloned()
            .collect();
        if !walk.ascending {
            rows.reverse();
        }
        rows.truncate(q.limit + 1);
        walk.page(rows, q.limit, |k| k.clone())
    }

    fn keys() -> impl Strategy<Value = Vec<String>> {
        prop::collection::btree_set(0u32..10_000, 0..60)
            .prop_map(|s| s.into_iter().map(|n| format!("id_{n:05}")).collect())
    }

    fn order() -> impl Strategy<Value = Order> {
        prop_oneof![Just(Order::Ascending), Just(Order::Descending)]
    }

    proptest! {
        #[test]
        fn forward_pages_visit_every_row_once_in_order(
            keys in keys(), limit in 1usize..12, order in order()
        ) {
            let mut q = ListQuery { limit, iterator: None, order };
            let mut seen = Vec::new();
            for _ in 0..=keys.len() + 1 {
                let p = page(&keys, &q);
                prop_assert!(p.data.len() <= limit);
                seen.extend(p.data.iter().cloned());
                if p.done {
                    break;
                }
                q.iterator = p.iterator.clone();
            }
            let mut want = keys.clone();
            if order == Order::Descending {
                want.reverse();
            }
            prop_assert_eq!(seen, want);
        }

        #[test]
        fn prev_iterator_leads_back_to_the_page_before(
            keys in keys(), limit in 1usize..12, order in order(), skip in 1usize..6
        ) {
            let mut q = ListQuery { limit, iterator: None, order };
            let mut pages = vec![page(&keys, &q)];
            for _ in 0..skip {
                let last = pages.last().unwrap();
                if last.done {
                    break;
                }
                q.iterator = last.iterator.clone();
                pages.push(page(&keys, &q));
            }
            // Each page's prev_iterator gives the page before it (when it has rows).
            for pair in pages.windows(2) {
                let Some(prev) = pair[1].prev_iterator.clone() else { continue };
                let back = page(&keys, &ListQuery { limit, iterator: Some(prev), order });
                prop_assert_eq!(&back.data, &pair[0].data);
                prop_assert!(!back.done);
            }
        }

        #[test]
        fn any_iterator_text_is_an_answer(
            keys in keys(), it in "\\PC{0,20}", limit in 1usize..12, order in order()
        ) {
            let p = page(&keys, &ListQuery { limit, iterator: Some(it), order });
            prop_assert!(p.data.len() <= limit);
        }
    }
}
