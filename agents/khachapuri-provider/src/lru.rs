//! A small least-recently-used map, for the agent's caches of specs and payer tokens.

use std::{collections::HashMap, num::NonZeroUsize};

/// A small least-recently-used map.
pub(crate) struct Lru<V> {
    capacity: NonZeroUsize,
    tick: u64,
    map: HashMap<String, (u64, V)>,
}

impl<V: Clone> Lru<V> {
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            capacity,
            tick: 0,
            map: HashMap::new(),
        }
    }

    pub(crate) fn get(&mut self, key: &str) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(t, v)| {
            *t = tick;
            v.clone()
        })
    }

    pub(crate) fn put(&mut self, key: String, value: V) {
        if self.map.len() >= self.capacity.get()
            && !self.map.contains_key(&key)
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
        self.tick += 1;
        self.map.insert(key, (self.tick, value));
    }
}
