//! README's `[sampling]` example, taken from README.md itself (so the two cannot drift),
//! parsed as a config file is and run through the sampler: the rule it shows, the
//! alternatives its comment offers (`ratio`, `keep = false`), and the defaults it keeps.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runtime_tap::config::Config;
use runtime_tap::trace::sample::{DEFAULT_SLOW, Sampler, SamplingConfig};
use runtime_tap::trace::span::{SpanKind, SpanRecord, SpanStatus, new_span_id, new_trace_id};

/// The first ```toml block of README's "### Sampling" section.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n### Sampling\n")
        .nth(1)
        .expect("README has ### Sampling");
    let section = section.split("\n#").next().unwrap();
    let block = section
        .split("```toml\n")
        .nth(1)
        .expect("a ```toml block in ### Sampling");
    block.split("```").next().unwrap().to_string()
}

/// The example as a whole config file (one intercept, then README's text as it is).
fn parse(example: &str) -> Result<SamplingConfig, String> {
    let text = format!(
        "[[intercept]]\nname = \"dockerd\"\nlisten = \"unix:///tmp/tap.sock\"\nupstream = \"unix:///tmp/d.sock\"\n\n{example}"
    );
    Config::parse(&text, "README.md")
        .map(|c| c.sampling)
        .map_err(|e| e.to_string())
}

fn span(name: &str, ms: u64, error: bool) -> SpanRecord {
    let start = UNIX_EPOCH + Duration::from_secs(100);
    SpanRecord {
        trace_id: new_trace_id(),
        span_id: new_span_id(),
        parent: None,
        trace_state: None,
        name: name.into(),
        kind: SpanKind::Server,
        start,
        end: start + Duration::from_millis(ms),
        attributes: vec![],
        events: vec![],
        links: vec![],
        status: if error {
            SpanStatus::Error("x".into())
        } else {
            SpanStatus::Unset
        },
        service: Arc::from("dockerd"),
    }
}

/// Calls of `names` in turn, `per_second` of them each second for `seconds`; how many of
/// each name were kept.
fn poll(s: &mut Sampler, names: &[&str], per_second: u32, seconds: u32) -> Vec<usize> {
    let t0 = UNIX_EPOCH + Duration::from_secs(10_000);
    let mut kept = vec![0; names.len()];
    for i in 0..per_second * seconds {
        let at = t0 + Duration::from_secs_f64(f64::from(i) / f64::from(per_second));
        let which = i as usize % names.len();
        if s.keep(&[span(names[which], 1, false)], at) {
            kept[which] += 1;
        }
    }
    kept
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(50_000)
}

#[test]
fn readme_example_parses_and_rate_limits_its_route() {
    let example = readme_example();
    let c = parse(&example).unwrap();
    assert_eq!(
        c.slow_ms,
        DEFAULT_SLOW.as_millis() as u64,
        "README's slow_ms is the default"
    );
    assert!(c.default_rules);
    assert_eq!(c.rules.len(), 1, "{:?}", c.rules);
    let rule = &c.rules[0];
    assert_eq!(rule.name, "GET /containers/*");
    assert_eq!(rule.per_second, Some(1.0));

    let mut s = Sampler::new(&c);
    // 10 list calls a second for a minute: one a second (and the bucket's first token).
    let kept = poll(&mut s, &["GET /containers/json"], 10, 60);
    assert!((60..=61).contains(&kept[0]), "kept {kept:?} of 600 at 1/s");
    // The bucket is the rule's: every route the wildcard matches shares the one rate.
    let mut s = Sampler::new(&c);
    let kept = poll(&mut s, &["GET /containers/json", "GET /containers/{id}/json"], 10, 60);
    let total: usize = kept.iter().sum();
    assert!((60..=61).contains(&total), "kept {kept:?} of 600 at 1/s for the rule");

    // With the bucket empty (just after the last poll), failed and slow calls of the route
    // are still kept...
    let drained = UNIX_EPOCH + Duration::from_millis(10_059_950);
    assert!(!s.keep(&[span("GET /containers/json", 1, false)], drained));
    assert!(s.keep(&[span("GET /containers/json", 1, true)], drained));
    assert!(s.keep(&[span("GET /containers/json", c.slow_ms, false)], drained));
    assert!(
        !s.keep(&[span("GET /containers/json", c.slow_ms - 1, false)], drained),
        "just under slow_ms is an ordinary call"
    );
    // ...also when the failure is deeper in the trace than its root.
    let mut trace = vec![
        span("GET /containers/json", 1, false),
        span("containerd.services.tasks.v1.Tasks/Get", 1, true),
    ];
    trace[1].trace_id = trace[0].trace_id;
    assert!(s.keep(&trace, drained));
    // Mutating calls match no rule: every one kept.
    for name in [
        "POST /containers/create",
        "POST /containers/{id}/start",
        "runtime.v1.RuntimeService/RunPodSandbox",
    ] {
        assert_eq!(poll(&mut s, &[name], 10, 10), [100], "{name}");
    }
    // default_rules = true: after README's rule, kubelet's polls are thinned to one per 10 s.
    let kept = poll(&mut s, &["runtime.v1.RuntimeService/ListPodSandbox"], 1, 60);
    assert_eq!(kept, [6]);
}

/// README's rule with its `per_second = ...` line replaced by `line`.
fn with_rule_line(example: &str, line: &str) -> String {
    let old = example
        .lines()
        .find(|l| l.trim_start().starts_with("per_second"))
        .expect("README's rule has a per_second line");
    example.replace(old, line)
}

#[test]
fn readme_alternatives_ratio_and_keep_false_behave() {
    let example = readme_example();
    // The comment offers them: `# or ratio = 0.1, or keep = false`.
    let comment = example
        .lines()
        .find_map(|l| {
            l.trim_start()
                .starts_with("per_second")
                .then(|| l.split_once('#').map(|x| x.1))
        })
        .flatten()
        .expect("a comment on the per_second line");
    let alternatives: Vec<&str> = comment
        .split(',')
        .map(|a| a.trim().trim_start_matches("or ").trim())
        .collect();
    assert_eq!(alternatives.len(), 2, "{comment}");
    let ratio = alternatives
        .iter()
        .find(|a| a.starts_with("ratio"))
        .expect("a ratio alternative");
    let keep = alternatives
        .iter()
        .find(|a| a.starts_with("keep"))
        .expect("a keep alternative");

    let c = parse(&with_rule_line(&example, ratio)).unwrap();
    let r = c.rules[0].ratio.unwrap();
    let mut s = Sampler::new(&c);
    let n = 5000;
    let kept = poll(&mut s, &["GET /containers/json"], 100, n / 100)[0] as f64;
    let expected = r * f64::from(n);
    assert!(
        (kept - expected).abs() < 4.0 * (expected * (1.0 - r)).sqrt(),
        "ratio {r}: kept {kept} of {n}"
    );
    // Decided by trace id: the same trace decides the same way every time.
    let one = [span("GET /containers/json", 1, false)];
    let first = s.keep(&one, now());
    assert!((0..20).all(|_| s.keep(&one, now()) == first));

    let c = parse(&with_rule_line(&example, keep)).unwrap();
    assert_eq!(c.rules[0].keep, Some(false));
    let mut s = Sampler::new(&c);
    assert_eq!(
        poll(&mut s, &["GET /containers/json", "GET /containers/{id}/json"], 10, 10),
        [0, 0]
    );
    assert!(
        s.keep(&[span("GET /containers/json", 1, true)], now()),
        "errors are kept even so"
    );

    // One of them per rule: README's rule with a second one added is refused, by name.
    let both = with_rule_line(&example, &format!("per_second = 1.0\n{ratio}"));
    let err = parse(&both).unwrap_err();
    assert!(err.contains("sampling"), "{err}");
}
