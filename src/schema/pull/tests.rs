use std::time::{Duration, SystemTime};

use super::*;
use crate::trace::attr::AttrValue;

fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

fn int(attrs: &[Attr], key: &str) -> Option<i64> {
    attrs.iter().find(|a| a.key == key).and_then(|a| match a.value {
        AttrValue::Int(i) => Some(i),
        _ => None,
    })
}

fn double(attrs: &[Attr], key: &str) -> Option<f64> {
    attrs.iter().find(|a| a.key == key).and_then(|a| match a.value {
        AttrValue::Double(d) => Some(d),
        _ => None,
    })
}

fn string<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a str> {
    attrs.iter().find(|a| a.key == key).and_then(|a| match &a.value {
        AttrValue::Str(s) => Some(s.as_str()),
        _ => None,
    })
}

/// dockerd 20.10's answer to `docker pull 127.0.0.1:PORT/two:1` of the bed's two-layer image
/// (recorded through runtime-tap; the first layer downloaded too), with the ms each line
/// arrived after the request.
const PULL_TWO_LAYERS: &[(u64, &str)] = &[
    (3, r#"{"status":"Pulling from two","id":"1"}"#),
    (
        5,
        r#"{"status":"Pulling fs layer","progressDetail":{},"id":"54e2f9a70d9a"}"#,
    ),
    (
        5,
        r#"{"status":"Pulling fs layer","progressDetail":{},"id":"50cbc3cd0f0e"}"#,
    ),
    (
        9,
        r#"{"status":"Downloading","progressDetail":{"current":120,"total":120},"progress":"[==================================================\u003e]     120B/120B","id":"50cbc3cd0f0e"}"#,
    ),
    (
        10,
        r#"{"status":"Verifying Checksum","progressDetail":{},"id":"50cbc3cd0f0e"}"#,
    ),
    (
        10,
        r#"{"status":"Download complete","progressDetail":{},"id":"50cbc3cd0f0e"}"#,
    ),
    (
        12,
        r#"{"status":"Downloading","progressDetail":{"current":524288,"total":1064638},"progress":"[========================\u003e                          ]  524.3kB/1.065MB","id":"54e2f9a70d9a"}"#,
    ),
    (
        20,
        r#"{"status":"Downloading","progressDetail":{"current":1064638,"total":1064638},"progress":"[==================================================\u003e]  1.065MB/1.065MB","id":"54e2f9a70d9a"}"#,
    ),
    (
        21,
        r#"{"status":"Verifying Checksum","progressDetail":{},"id":"54e2f9a70d9a"}"#,
    ),
    (
        22,
        r#"{"status":"Download complete","progressDetail":{},"id":"54e2f9a70d9a"}"#,
    ),
    (
        23,
        r#"{"status":"Extracting","progressDetail":{"current":65536,"total":1064638},"progress":"[===\u003e     ]  65.54kB/1.065MB","id":"54e2f9a70d9a"}"#,
    ),
    (
        40,
        r#"{"status":"Extracting","progressDetail":{"current":1064638,"total":1064638},"progress":"[==================================================\u003e]  1.065MB/1.065MB","id":"54e2f9a70d9a"}"#,
    ),
    (
        42,
        r#"{"status":"Pull complete","progressDetail":{},"id":"54e2f9a70d9a"}"#,
    ),
    (
        43,
        r#"{"status":"Extracting","progressDetail":{"current":120,"total":120},"progress":"[==================================================\u003e]     120B/120B","id":"50cbc3cd0f0e"}"#,
    ),
    (
        44,
        r#"{"status":"Extracting","progressDetail":{"current":120,"total":120},"progress":"[==================================================\u003e]     120B/120B","id":"50cbc3cd0f0e"}"#,
    ),
    (
        46,
        r#"{"status":"Pull complete","progressDetail":{},"id":"50cbc3cd0f0e"}"#,
    ),
    (
        47,
        r#"{"status":"Digest: sha256:3e53b0675ebf8f1b073f0c8cab8ff8bc038db151dd2e4b003f3f791ff38ee8c3"}"#,
    ),
    (
        47,
        r#"{"status":"Status: Downloaded newer image for 127.0.0.1:44457/two:1"}"#,
    ),
];

#[test]
fn a_two_layer_pull_is_a_download_and_an_extract_span_per_layer_with_the_blob_sizes() {
    let mut p = PullProgress::default();
    for (ms, line) in PULL_TWO_LAYERS {
        p.docker_line(line.as_bytes(), t(*ms));
    }
    let mut attrs = Vec::new();
    let spans = p.finish(t(0), t(48), &mut attrs);
    let summary: Vec<(&str, &str, i64, u128, u128)> = spans
        .iter()
        .map(|s| {
            let ms = |x: SystemTime| x.duration_since(t(0)).unwrap().as_millis();
            (
                s.name,
                string(&s.attributes, names::IMAGE_LAYER_ID).unwrap(),
                int(&s.attributes, names::IMAGE_LAYER_BYTES).unwrap(),
                ms(s.start),
                ms(s.end),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            // Download from its first bytes to `Download complete`; extract from the first
            // `Extracting` to `Pull complete`.
            (LAYER_DOWNLOAD, "54e2f9a70d9a", 1_064_638, 12, 22),
            (LAYER_EXTRACT, "54e2f9a70d9a", 1_064_638, 23, 42),
            (LAYER_DOWNLOAD, "50cbc3cd0f0e", 120, 9, 10),
            (LAYER_EXTRACT, "50cbc3cd0f0e", 120, 43, 46),
        ]
    );
    // 1,064,638 bytes in 10 ms.
    let rate = double(&spans[0].attributes, names::IMAGE_LAYER_BYTES_PER_SECOND).unwrap();
    assert!((rate - 106_463_800.0).abs() < 1.0, "{rate}");
    assert_eq!(int(&attrs, names::IMAGE_LAYERS), Some(2));
    assert_eq!(int(&attrs, names::IMAGE_BYTES), Some(1_064_758));
    assert_eq!(double(&attrs, names::IMAGE_FIRST_BYTE_MS), Some(9.0));
    assert_eq!(string(&attrs, names::IMAGE_PROGRESS), Some("layers"));
    assert_eq!(int(&attrs, names::IMAGE_LAYERS_CACHED), None);
}

#[test]
fn a_layer_the_daemon_has_is_counted_cached_with_no_span() {
    let mut p = PullProgress::default();
    for line in [
        r#"{"status":"Pulling from two","id":"1"}"#,
        r#"{"status":"Already exists","progressDetail":{},"id":"54e2f9a70d9a"}"#,
        r#"{"status":"Pulling fs layer","progressDetail":{},"id":"50cbc3cd0f0e"}"#,
        r#"{"status":"Download complete","progressDetail":{},"id":"50cbc3cd0f0e"}"#,
    ] {
        p.docker_line(line.as_bytes(), t(1));
    }
    let mut attrs = Vec::new();
    let spans = p.finish(t(0), t(2), &mut attrs);
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(int(&attrs, names::IMAGE_LAYERS), Some(2));
    assert_eq!(int(&attrs, names::IMAGE_LAYERS_CACHED), Some(1));
    // No `Downloading` line: the size is not known, and no first byte was seen.
    assert_eq!(int(&attrs, names::IMAGE_BYTES), Some(0));
    assert_eq!(double(&attrs, names::IMAGE_FIRST_BYTE_MS), None);
}

/// 500 layers and 100,000 progress lines: at most MAX_LAYERS layers are held, at most two
/// spans each are made, and the rest are counted.
#[test]
fn a_huge_pull_is_bounded_in_layers_and_spans() {
    let mut p = PullProgress::default();
    let mut lines = 0;
    for layer in 0..500 {
        let line = format!(r#"{{"status":"Pulling fs layer","progressDetail":{{}},"id":"{layer:012x}"}}"#);
        p.docker_line(line.as_bytes(), t(1));
        lines += 1;
    }
    while lines < 100_000 {
        let layer = lines % 500;
        let line = format!(
            r#"{{"status":"Downloading","progressDetail":{{"current":{lines},"total":1000000}},"id":"{layer:012x}"}}"#
        );
        p.docker_line(line.as_bytes(), t(2));
        lines += 1;
        assert!(p.tracked() <= MAX_LAYERS);
    }
    // A line with an over-long id never grows what a layer holds.
    let long = format!(r#"{{"status":"Pulling fs layer","id":"{}"}}"#, "a".repeat(10_000));
    p.docker_line(long.as_bytes(), t(3));
    assert!(p.layers.iter().all(|l| l.id.len() <= MAX_LAYER_ID));
    let mut attrs = Vec::new();
    let spans = p.finish(t(0), t(4), &mut attrs);
    assert_eq!(spans.len(), MAX_LAYERS, "one download span per tracked layer");
    assert_eq!(int(&attrs, names::IMAGE_LAYERS), Some(501));
    assert_eq!(
        int(&attrs, names::IMAGE_LAYERS_UNTRACKED),
        Some(501 - MAX_LAYERS as i64)
    );
    assert_eq!(int(&attrs, names::IMAGE_BYTES), Some(MAX_LAYERS as i64 * 1_000_000));
}

#[test]
fn lines_that_are_no_layers_progress_change_nothing() {
    let mut p = PullProgress::default();
    for line in [
        &b"not json"[..],
        br#"{"status":"Downloading","id":"never-announced","progressDetail":{"total":5}}"#,
        br#"{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}"#,
        br#"{"status":"Digest: sha256:00"}"#,
    ] {
        p.docker_line(line, t(1));
    }
    assert_eq!(p.tracked(), 0);
    let mut attrs = Vec::new();
    assert!(p.finish(t(0), t(2), &mut attrs).is_empty());
    // Nothing claimed either: an import shares the pull's route and names no layer.
    assert!(attrs.is_empty(), "{attrs:?}");
}

/// dockerd 26 and 28 send no `Downloading` line for a layer that arrives in one read: its size
/// comes from its `Extracting` total (the same compressed blob).
#[test]
fn a_layer_with_no_downloading_line_takes_its_size_from_extracting() {
    let mut p = PullProgress::default();
    for (ms, line) in [
        (
            1,
            r#"{"status":"Pulling fs layer","progressDetail":{},"id":"bfbaa61bf998"}"#,
        ),
        (
            2,
            r#"{"status":"Download complete","progressDetail":{},"id":"bfbaa61bf998"}"#,
        ),
        (
            3,
            r#"{"status":"Extracting","progressDetail":{"current":114,"total":114},"id":"bfbaa61bf998"}"#,
        ),
        (
            4,
            r#"{"status":"Pull complete","progressDetail":{},"id":"bfbaa61bf998"}"#,
        ),
    ] {
        p.docker_line(line.as_bytes(), t(ms));
    }
    let mut attrs = Vec::new();
    let spans = p.finish(t(0), t(5), &mut attrs);
    assert_eq!(spans.len(), 2, "{spans:?}");
    for s in &spans {
        assert_eq!(int(&s.attributes, names::IMAGE_LAYER_BYTES), Some(114), "{s:?}");
    }
    assert_eq!(int(&attrs, names::IMAGE_BYTES), Some(114));
}

/// containerd 2.x's Progress events: only a pull's stream counts, `layer-` blobs only, bytes
/// are the blob's `total`, and 500 layers keep 128 download spans (no extract: containerd
/// reports no per-layer unpack).
#[test]
fn containerd_progress_is_folded_per_layer_and_bounded() {
    let mut p = PullProgress::default();
    p.containerd_event("waiting", "layer-sha256:aa", 10, t(1));
    assert_eq!(p.tracked(), 0, "not a pull's stream yet");
    p.containerd_event("Pulling from OCI Registry (127.0.0.1:5000/two:1)", "", 0, t(2));
    p.containerd_event("waiting", "manifest-sha256:mm", 401, t(3));
    for i in 0..500u64 {
        let name = format!("layer-sha256:{i:064x}");
        p.containerd_event("waiting", &name, 1000 + i, t(4));
        p.containerd_event("downloading", &name, 1000 + i, t(5));
        p.containerd_event("complete", &name, 1000 + i, t(9));
    }
    p.containerd_event("already exists", "layer-sha256:bb", 7, t(10));
    assert_eq!(p.tracked(), MAX_LAYERS);
    let mut attrs = Vec::new();
    let spans = p.finish(t(0), t(20), &mut attrs);
    assert_eq!(spans.len(), MAX_LAYERS);
    assert!(spans.iter().all(|s| s.name == LAYER_DOWNLOAD));
    let first = &spans[0];
    assert_eq!(
        string(&first.attributes, names::IMAGE_LAYER_ID),
        Some(&*format!("sha256:{:064x}", 0))
    );
    assert_eq!(int(&first.attributes, names::IMAGE_LAYER_BYTES), Some(1000));
    assert_eq!((first.start, first.end), (t(5), t(9)));
    assert_eq!(int(&attrs, names::IMAGE_LAYERS), Some(501));
    assert_eq!(int(&attrs, names::IMAGE_LAYERS_UNTRACKED), Some(500 - 128));
    assert_eq!(int(&attrs, names::IMAGE_LAYERS_CACHED), Some(1));
    assert_eq!(double(&attrs, names::IMAGE_FIRST_BYTE_MS), Some(5.0));
}
