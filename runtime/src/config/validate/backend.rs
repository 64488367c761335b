//! Validation of `backends`: each implementation's settings, the tokenizer, the replica list
//! and the KV-cache section (sized against the prompts of the agents using the backend).

use super::*;

impl Validator<'_> {
    pub(super) fn backend(&mut self, b: &raw::RawBackend, agents: &[raw::RawAgent]) -> BackendSpec {
        let at = |f| At::Field(EntityKind::Backend, &b.name, None, f);
        let replicas;
        let kind = match &b.kind {
            raw::RawBackendKind::OpenAi(o) => {
                let urls = match (&o.base_url, &o.base_urls) {
                    (Some(u), None) => vec![u.clone()],
                    (None, Some(list)) if list.is_empty() => {
                        self.err(
                            at("base_urls"),
                            "base_urls (the replica list) is empty; list at least one base URL",
                        );
                        Vec::new()
                    }
                    (None, Some(list)) => list.clone(),
                    (Some(_), Some(_)) => {
                        self.err(
                            at("base_urls"),
                            "give either base_url (one replica) or base_urls (several), not both",
                        );
                        Vec::new()
                    }
                    (None, None) => {
                        self.err(
                            at("kind"),
                            "needs base_url (one replica) or base_urls (several replicas)",
                        );
                        Vec::new()
                    }
                };
                for u in &urls {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        let field = if o.base_url.is_some() {
                            "base_url"
                        } else {
                            "base_urls"
                        };
                        self.err(
                            at(field),
                            format!("{field} must start with http:// or https://, got {u:?}"),
                        );
                    }
                }
                let urls: Vec<String> = urls
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .collect();
                let mut seen = HashSet::new();
                for u in &urls {
                    if !seen.insert(u.as_str()) {
                        self.err(at("base_urls"), format!("replica {u:?} is listed twice"));
                    }
                }
                replicas = urls.len().max(1);
                if o.model.trim().is_empty() {
                    self.err(at("model"), "model must not be empty");
                }
                if !positive_secs(o.timeout_secs) {
                    self.err(
                        at("timeout_secs"),
                        format!(
                            "timeout_secs must be > 0 and at most 31536000, got {}",
                            o.timeout_secs
                        ),
                    );
                }
                if o.api_key_env
                    .as_deref()
                    .is_some_and(|v| v.trim().is_empty())
                {
                    self.err(
                        at("api_key_env"),
                        "api_key_env must name an environment variable",
                    );
                }
                if o.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                    self.err(at("temperature"), "temperature must be within 0..=2");
                }
                BackendKind::OpenAi(OpenAiSettings {
                    base_url: urls.first().cloned().unwrap_or_default(),
                    base_urls: urls,
                    model: o.model.clone(),
                    api_key_env: o.api_key_env.clone(),
                    request_timeout: secs(o.timeout_secs),
                    max_tokens: o.max_tokens,
                    temperature: o.temperature,
                })
            }
            raw::RawBackendKind::Sim(s) => {
                let l = &s.latency;
                for (name, v) in [
                    ("base_ms", l.base_ms),
                    ("per_prompt_token_us", l.per_prompt_token_us),
                    ("per_output_token_ms", l.per_output_token_ms),
                ] {
                    if !finite_nonneg(v) {
                        self.err(
                            at("latency"),
                            format!("latency.{name} must be within 0..=31536000, got {v}"),
                        );
                    }
                }
                let f = &s.faults;
                for (name, v) in [
                    ("error_rate", f.error_rate),
                    ("panic_rate", f.panic_rate),
                    ("hang_rate", f.hang_rate),
                ] {
                    if !(0.0..=1.0).contains(&v) {
                        self.err(
                            at("faults"),
                            format!("faults.{name} must be within 0..=1, got {v}"),
                        );
                    }
                }
                if f.error_rate + f.panic_rate + f.hang_rate > 1.0 {
                    self.err(at("faults"), "fault rates add up to more than 1");
                }
                if !(1..=1024).contains(&s.replicas) {
                    self.err(
                        at("kind"),
                        format!(
                            "the simulator's replicas must be within 1..=1024 (0 is an empty replica list), got {}",
                            s.replicas
                        ),
                    );
                }
                if s.slots > MAX_SIM_SLOTS {
                    self.err(
                        at("kind"),
                        format!(
                            "the simulator's slots must be within 0..={MAX_SIM_SLOTS} (0 = unlimited), got {}",
                            s.slots
                        ),
                    );
                }
                replicas = s.replicas.clamp(1, 1024) as usize;
                let ms = |v: f64| secs(v / 1e3);
                BackendKind::Sim(SimSettings {
                    seed: s.seed,
                    latency: SimLatency {
                        base: ms(l.base_ms),
                        per_prompt_token: secs(l.per_prompt_token_us / 1e6),
                        per_output_token: ms(l.per_output_token_ms),
                    },
                    faults: SimFaults {
                        error_rate: f.error_rate,
                        panic_rate: f.panic_rate,
                        hang_rate: f.hang_rate,
                    },
                    slots: s.slots.min(MAX_SIM_SLOTS) as usize,
                })
            }
        };
        let tokenizer = match b.tokenizer.as_deref() {
            None => Encoding::default(),
            Some(name) => Encoding::from_name(name).unwrap_or_else(|| {
                let known: Vec<_> = Encoding::ALL.iter().map(|e| e.name()).collect();
                self.err(
                    at("tokenizer"),
                    format!(
                        "unknown tokenizer {name:?}; known encodings: {}",
                        known.join(", ")
                    ),
                );
                Encoding::default()
            }),
        };
        let cache = self.cache(b, agents);
        let limits = self.backend_limits(b);
        BackendSpec {
            limits,
            name: b.name.clone(),
            kind,
            tokenizer,
            replicas,
            cache,
        }
    }

    /// The `cache` section: block size, capacity (enough for the largest prompt of any agent on
    /// this backend), routing policy, load slack and salt.
    fn cache(&mut self, b: &raw::RawBackend, agents: &[raw::RawAgent]) -> KvCacheSettings {
        let at = At::Field(EntityKind::Backend, &b.name, None, "cache");
        let c = &b.cache;
        if !(1..=MAX_BLOCK_SIZE).contains(&c.block_size) {
            self.err(
                at,
                format!(
                    "cache.block_size must be within 1..={MAX_BLOCK_SIZE} tokens, got {}",
                    c.block_size
                ),
            );
        }
        if !(1..=MAX_CACHE_BLOCKS).contains(&c.capacity_blocks) {
            self.err(
                at,
                format!(
                    "cache.capacity_blocks must be within 1..={MAX_CACHE_BLOCKS}, got {}",
                    c.capacity_blocks
                ),
            );
        } else if c.block_size > 0 {
            let largest = agents
                .iter()
                .filter(|a| a.backend == b.name)
                .map(|a| (a, super::context::declared_budget_tokens(a)))
                .max_by_key(|(_, budget)| *budget);
            if let Some((a, budget)) = largest {
                let needed = budget.div_ceil(c.block_size as u64);
                if (c.capacity_blocks as u64) < needed {
                    self.err(
                        at,
                        format!(
                            "cache.capacity_blocks {} ({} tokens per replica) is smaller than one prompt of agent \"{}\" (context budget {budget} tokens); it needs at least {needed} blocks of {}",
                            c.capacity_blocks,
                            c.capacity_blocks * c.block_size,
                            a.name,
                            c.block_size
                        ),
                    );
                }
            }
        }
        let routing = RoutingPolicy::from_name(&c.routing).unwrap_or_else(|| {
            let known: Vec<_> = RoutingPolicy::ALL.iter().map(|p| p.name()).collect();
            self.err(
                at,
                format!(
                    "unknown routing policy {:?}; known policies: {}",
                    c.routing,
                    known.join(", ")
                ),
            );
            RoutingPolicy::default()
        });
        if !(c.load_slack.is_finite() && (0.0..=100.0).contains(&c.load_slack)) {
            self.err(
                at,
                format!(
                    "cache.load_slack must be within 0..=100, got {}",
                    c.load_slack
                ),
            );
        }
        if c.salt.as_deref().is_some_and(|s| s.is_empty()) {
            self.err(
                at,
                "cache.salt must not be empty (leave it out for no salt)",
            );
        }
        KvCacheSettings {
            block_size: c.block_size.clamp(1, MAX_BLOCK_SIZE),
            capacity_blocks: c.capacity_blocks.clamp(1, MAX_CACHE_BLOCKS),
            routing,
            load_slack: if c.load_slack.is_finite() {
                c.load_slack.clamp(0.0, 100.0)
            } else {
                0.0
            },
            salt: c.salt.clone(),
        }
    }
}
