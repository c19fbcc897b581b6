//! One value per distinct rule and per distinct list of effective rules within a load, so that
//! 100,000 customers with the same playbook and the same own rules (a generated plan, a
//! template every plan was copied from) hold one rule list between them instead of 100,000
//! copies — at rest, and above all while a playbook edit validates every customer again
//! beside the ones in force.

use crate::plan::model::Rule;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Distinct values kept per fingerprint: rules that look alike by their fingerprint but differ
/// (thousands of plans each with its own date for a rule of the same name) are compared with
/// at most this many before a new one is left alone, so interning never turns quadratic.
const PER_FINGERPRINT: usize = 8;

/// The rules and rule lists seen in one load (shared read-only by the parallel workers, like
/// [`crate::calendar::CrontabCache`]).
#[derive(Debug, Default)]
pub struct RuleCache(Mutex<Interned>);

#[derive(Debug, Default)]
struct Interned {
    hasher: std::collections::hash_map::RandomState,
    /// A plan's own rules by fingerprint.
    rules: HashMap<u64, Vec<Arc<Rule>>>,
    /// Effective rule lists by the addresses of their (interned) rules.
    lists: HashMap<u64, Vec<Arc<[Arc<Rule>]>>>,
}

/// What tells rules apart cheaply (the rest is compared): name, template, time, action,
/// recipients, delivery, priority and the trigger's kind.
fn fingerprint(state: &impl BuildHasher, r: &Rule) -> u64 {
    state.hash_one((&r.name, &r.template, r.at, r.action, r.target, r.delivery, r.priority, r.trigger.kind()))
}

impl RuleCache {
    /// `rule`, or an equal one seen before in this load (shared).
    pub fn rule(&self, rule: Rule) -> Arc<Rule> {
        let mut i = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = fingerprint(&i.hasher, &rule);
        let bucket = i.rules.entry(key).or_default();
        if let Some(same) = bucket.iter().find(|r| ***r == rule) {
            return same.clone();
        }
        let rule = Arc::new(rule);
        if bucket.len() < PER_FINGERPRINT {
            bucket.push(rule.clone());
        }
        rule
    }

    /// The list of `rules`, shared with every equal list (the same rules, by identity) seen
    /// before in this load.
    pub fn list(&self, rules: Vec<Arc<Rule>>) -> Arc<[Arc<Rule>]> {
        let mut i = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = i.hasher.build_hasher();
        for r in &rules {
            Arc::as_ptr(r).hash(&mut h);
        }
        let key = h.finish();
        let bucket = i.lists.entry(key).or_default();
        let same =
            |l: &Arc<[Arc<Rule>]>| l.len() == rules.len() && l.iter().zip(&rules).all(|(a, b)| Arc::ptr_eq(a, b));
        if let Some(l) = bucket.iter().find(|l| same(l)) {
            return l.clone();
        }
        let list: Arc<[Arc<Rule>]> = rules.into();
        if bucket.len() < PER_FINGERPRINT {
            bucket.push(list.clone());
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::{Action, DeliveryPolicy, Lead, Target, Trigger};

    fn rule(name: &str, at: &str) -> Rule {
        Rule {
            name: name.into(),
            trigger: Trigger::Birthday,
            action: Action::Email,
            target: Target::Contacts,
            template: "birthday".into(),
            at: at.parse().unwrap(),
            before: Lead::None,
            leap_day: Default::default(),
            delivery: DeliveryPolicy::AtLeastOnce,
            deadline: None,
            calendar: Default::default(),
            phases: None,
            priority: 0,
            spread: Lead::None,
        }
    }

    #[test]
    fn equal_rules_and_lists_are_one_value() {
        let cache = RuleCache::default();
        let (a, b) = (cache.rule(rule("x", "09:00")), cache.rule(rule("x", "09:00")));
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache.rule(rule("x", "09:05"));
        assert!(!Arc::ptr_eq(&a, &c) && *c == rule("x", "09:05"));
        let (l1, l2) = (cache.list(vec![a.clone(), c.clone()]), cache.list(vec![b.clone(), c.clone()]));
        assert!(Arc::ptr_eq(&l1, &l2), "the same rules, one list");
        assert!(!Arc::ptr_eq(&l1, &cache.list(vec![c.clone(), a.clone()])), "another order is another list");
        assert!(!Arc::ptr_eq(&l1, &cache.list(vec![a.clone()])));
    }

    #[test]
    fn rules_alike_but_different_are_kept_apart_and_not_all_remembered() {
        let cache = RuleCache::default();
        // Same fingerprint (name, time, template …), different lead times: all distinct values.
        let rules: Vec<Arc<Rule>> = (0..3 * PER_FINGERPRINT as u32)
            .map(|d| cache.rule(Rule { before: Lead::Days(d), ..rule("x", "09:00") }))
            .collect();
        for (d, r) in rules.iter().enumerate() {
            assert_eq!(r.before, Lead::Days(d as u32));
        }
        let bucket = cache.0.lock().unwrap().rules.values().map(Vec::len).max();
        assert_eq!(bucket, Some(PER_FINGERPRINT), "at most {PER_FINGERPRINT} compared");
        // A remembered one is still found.
        assert!(Arc::ptr_eq(&rules[0], &cache.rule(Rule { before: Lead::Days(0), ..rule("x", "09:00") })));
    }
}
