//! The queue of one Alertmanager: alert states in, batches to send out. It holds only the
//! newest state of each alert (keyed by label set), so an Alertmanager that is down for a
//! long time gets the current state when it is back, never a backlog of stale messages.

use std::collections::{BTreeMap, HashMap};

use super::Alert;

/// A bounded map of pending alerts in arrival order.
#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    /// fingerprint → (position, newest state)
    items: HashMap<String, (u64, Alert)>,
    /// position → fingerprint, oldest first
    order: BTreeMap<u64, String>,
    next: u64,
}

/// Alerts taken for one request, to put back if it fails.
#[derive(Debug)]
pub struct Batch {
    pub items: Vec<(u64, String, Alert)>,
}

impl Batch {
    pub fn alerts(&self) -> Vec<&Alert> {
        self.items.iter().map(|(_, _, a)| a).collect()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            capacity: capacity.max(1),
            items: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues the newest state of an alert. A state already queued is replaced in place (it
    /// keeps its turn). When the queue is full the oldest alert is dropped, as Prometheus'
    /// notifier does; returns how many were dropped.
    pub fn upsert(&mut self, alert: Alert) -> usize {
        let fp = alert.fingerprint();
        if let Some((_, slot)) = self.items.get_mut(&fp) {
            *slot = alert;
            return 0;
        }
        let mut dropped = 0;
        while self.items.len() >= self.capacity {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.items.remove(&old);
            dropped += 1;
        }
        let pos = self.next;
        self.next += 1;
        self.order.insert(pos, fp.clone());
        self.items.insert(fp, (pos, alert));
        dropped
    }

    /// Takes up to `max` alerts, oldest first.
    pub fn take(&mut self, max: usize) -> Batch {
        let mut items = Vec::new();
        while items.len() < max {
            let Some((pos, fp)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, alert)) = self.items.remove(&fp) {
                items.push((pos, fp, alert));
            }
        }
        Batch { items }
    }

    /// Puts a failed batch back at its old place, except alerts whose newer state was queued
    /// meanwhile.
    pub fn put_back(&mut self, batch: Batch) {
        for (pos, fp, alert) in batch.items {
            if self.items.contains_key(&fp) {
                continue;
            }
            self.order.insert(pos, fp.clone());
            self.items.insert(fp, (pos, alert));
        }
    }

    /// Empties the queue; returns how many alerts it held.
    pub fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        self.order.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str, ends_at: i64) -> Alert {
        Alert {
            labels: [("deploy_id".to_string(), id.to_string())].into(),
            annotations: Default::default(),
            starts_at: 0,
            ends_at,
            generator_url: String::new(),
        }
    }

    #[test]
    fn holds_only_the_newest_state_of_each_alert() {
        let mut q = Queue::new(10);
        q.upsert(alert("a", 1));
        q.upsert(alert("b", 1));
        q.upsert(alert("a", 2));
        assert_eq!(q.len(), 2);
        let b = q.take(64);
        let got: Vec<_> = b
            .alerts()
            .iter()
            .map(|a| (a.labels["deploy_id"].clone(), a.ends_at))
            .collect();
        assert_eq!(got, [("a".to_string(), 2), ("b".to_string(), 1)]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_failed_batch_goes_back_unless_a_newer_state_arrived() {
        let mut q = Queue::new(10);
        for id in ["a", "b", "c"] {
            q.upsert(alert(id, 1));
        }
        let batch = q.take(2);
        assert_eq!(batch.len(), 2);
        q.upsert(alert("a", 5)); // newer state while the request failed
        q.put_back(batch);
        let got: Vec<_> = q
            .take(64)
            .alerts()
            .iter()
            .map(|a| (a.labels["deploy_id"].clone(), a.ends_at))
            .collect();
        assert_eq!(
            got,
            [
                ("b".to_string(), 1),
                ("c".to_string(), 1),
                ("a".to_string(), 5)
            ]
        );
    }

    #[test]
    fn bounded_dropping_the_oldest_and_batches_of_at_most_max() {
        let mut q = Queue::new(100);
        let mut dropped = 0;
        for i in 0..150 {
            dropped += q.upsert(alert(&format!("d{i:03}"), 1));
        }
        assert_eq!(dropped, 50);
        assert_eq!(q.len(), 100);
        let b = q.take(64);
        assert_eq!(b.len(), 64);
        assert_eq!(b.alerts()[0].labels["deploy_id"], "d050");
        assert_eq!(q.take(64).len(), 36);
        assert_eq!(q.take(64).len(), 0);
    }
}
