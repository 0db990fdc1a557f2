//! In-process caches of hot lookups (applications, event types), dropped by every
//! write that could change them: a speed-up only, never needed for correctness. SQLite
//! drops them on its own writes (it is the file's only writer); PostgreSQL also on every
//! other process's, as the database notifies them ([`crate::postgres`]'s change
//! listener).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::*;

/// Point lookups of rarely changing records, kept in memory (misses too) so the hot path
/// (create message) does not read them from SQLite each time. Exact, not eventually
/// consistent on SQLite: this process is the only writer of the file (the lock file sees
/// to it), and every write of such a record clears the cache once it has committed. A lookup
/// that raced with a write is not kept: the write bumps the generation, and a result is
/// stored only if the generation is the one seen before the lookup started.
///
/// Memory is bounded by an estimate of each entry's size (its JSON text), not by a count:
/// records can carry large metadata or schemas. An entry over a sixteenth of the budget
/// is not kept; a full cache starts over.
pub(crate) struct LookupCache<T> {
    pub(crate) inner: Mutex<CacheInner<T>>,
    /// Bytes the entries may take, by [`LookupCache::weigh`].
    pub(crate) budget: usize,
    pub(crate) weigh: fn(&T) -> usize,
}

pub(crate) struct CacheInner<T> {
    pub(crate) generation: u64,
    pub(crate) bytes: usize,
    pub(crate) entries: HashMap<String, Option<T>>,
}

impl<T: Clone> LookupCache<T> {
    pub(crate) fn new(budget: usize, weigh: fn(&T) -> usize) -> Self {
        Self {
            inner: Mutex::new(CacheInner {
                generation: 0,
                bytes: 0,
                entries: HashMap::new(),
            }),
            budget,
            weigh,
        }
    }

    /// The cached result for `key` (`Some(None)`: known not to exist), else the
    /// generation to hand back to [`put`](Self::put) with what the lookup found.
    pub(crate) fn get(&self, key: &str) -> Result<Option<T>, u64> {
        let inner = self.inner.lock().expect("cache poisoned");
        inner.entries.get(key).cloned().ok_or(inner.generation)
    }

    pub(crate) fn put(&self, generation: u64, key: String, value: Option<T>) {
        // Key, map overhead and the record itself.
        let size = key.len() + 64 + value.as_ref().map_or(0, self.weigh);
        if size > self.budget / 16 {
            return;
        }
        let mut inner = self.inner.lock().expect("cache poisoned");
        if inner.generation != generation {
            return;
        }
        if inner.bytes + size > self.budget {
            inner.entries.clear();
            inner.bytes = 0;
        }
        if inner.entries.insert(key, value).is_none() {
            inner.bytes += size;
        }
    }

    pub(crate) fn invalidate(&self) {
        let mut inner = self.inner.lock().expect("cache poisoned");
        inner.generation += 1;
        inner.entries.clear();
        inner.bytes = 0;
    }
}

/// Each lookup cache may hold this much (estimated).
pub(crate) const LOOKUP_CACHE_BYTES: usize = 8 << 20;

pub(crate) fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_string(v).map_or(usize::MAX / 2, |s| s.len())
}

pub(crate) fn app_weight(a: &Application) -> usize {
    a.id.len()
        + a.uid.as_ref().map_or(0, String::len)
        + a.name.len()
        + a.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>()
        + a.retry_policy.as_ref().map_or(0, json_len)
        + 128
}

pub(crate) fn event_type_weight(e: &EventType) -> usize {
    e.name.len()
        + e.description.len()
        + e.schemas.as_ref().map_or(0, json_len)
        + e.group_name.as_ref().map_or(0, String::len)
        + e.feature_flags
            .as_ref()
            .map_or(0, |f| f.iter().map(|x| x.len() + 24).sum())
        + 128
}
