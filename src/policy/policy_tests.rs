use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;

use super::rules::HttpHeaders;
use super::*;

const EXAMPLE: &str = include_str!("../../examples/policies/smart-cache-documents.yaml");

fn example() -> PolicySet {
    PolicySet::parse(EXAMPLE, false).expect("the example policy loads")
}

type Headers = IndexMap<StrBytes, Option<Bytes>>;
/// key, headers, value, the rule broken, what the message says.
type Case<'a> = (Option<&'a [u8]>, Headers, &'a [u8], Rule, &'a str);

fn headers(pairs: &[(&str, &str)]) -> IndexMap<StrBytes, Option<Bytes>> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                StrBytes::from_string((*k).to_owned()),
                Some(Bytes::from((*v).to_owned())),
            )
        })
        .collect()
}

const GOOD_VALUE: &[u8] = br#"{"uri": "https://example.org/ns#4732", "filename": "example.pdf", "content": "VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZy4g"}"#;

fn judge(
    set: &PolicySet,
    key: Option<&[u8]>,
    h: &IndexMap<StrBytes, Option<Bytes>>,
    value: &[u8],
    offloaded: bool,
) -> Result<(), Violation> {
    set.for_topic("documents").unwrap().check(&RecordView {
        key,
        value: Some(value),
        value_size: value.len() as u64,
        headers: h,
        offloaded,
    })
}

#[test]
fn the_example_policy_takes_the_seed_event_and_names_each_broken_rule() {
    let set = example();
    assert!(set.for_topic("documents").is_some());
    assert!(set.for_topic("documents.eu").is_some());
    assert!(set.for_topic("other").is_none());
    let label = "(classification=O&(permitted_organisations=Telicent))";
    let good = headers(&[
        ("Security-Label", label),
        ("Content-Type", "application/pdf"),
    ]);
    let key = b"33002c05-a04e-4915-9bf8-9fdf6e9096e6";
    judge(&set, Some(key), &good, GOOD_VALUE, false).unwrap();
    judge(&set, None, &good, GOOD_VALUE, false).unwrap();

    let cases: Vec<Case> = vec![
        (None, headers(&[]), GOOD_VALUE, Rule::HeaderRequired, "header Security-Label is required"),
        // Kafka header names are case-sensitive.
        (None, headers(&[("security-label", label)]), GOOD_VALUE, Rule::HeaderRequired, "Security-Label"),
        (None, headers(&[("Security-Label", "  ")]), GOOD_VALUE, Rule::HeaderValue, "header Security-Label must match"),
        (None, headers(&[("Security-Label", label), ("Content-Type", "pdf")]), GOOD_VALUE, Rule::HeaderValue, "header Content-Type must match"),
        (Some(b"not-a-uuid"), good.clone(), GOOD_VALUE, Rule::KeyUuid, "the key must be a UUID in the 36-character text form, as Kafka's UUIDSerializer writes it; got \"not-a-uuid\""),
        // The 16-byte form is not Kafka's default serialization.
        (Some(&[0xffu8; 16]), good.clone(), GOOD_VALUE, Rule::KeyUuid, "16 bytes that are not UTF-8"),
        (None, good.clone(), br#"{"content": "aGk="}"#, Rule::ValueJson, "the value has no field uri"),
        (None, good.clone(), br#"{"uri": "u"}"#, Rule::ValueJson, "the value has no field content"),
        (None, good.clone(), br#"{"uri": 5, "content": "aGk="}"#, Rule::ValueJson, "field uri must be a JSON string; got a number"),
        (None, good.clone(), br#"{"uri": "u", "content": "not base64!"}"#, Rule::ValueJson, "field content must be base64"),
        (None, good.clone(), b"<xml/>", Rule::ValueJson, "the value is not JSON"),
        (None, good.clone(), b"[1]", Rule::ValueJson, "the value is a JSON array; a JSON object is required"),
    ];
    for (key, h, value, rule, says) in cases {
        let v = judge(&set, key, &h, value, false).unwrap_err();
        assert_eq!(v.rule, rule, "{v}");
        assert!(v.message.contains(says), "{v} does not say {says}");
        assert_eq!(v.policy, "smart-cache-documents");
        assert!(v
            .to_string()
            .starts_with("policy smart-cache-documents rule "));
    }
}

#[test]
fn large_documents_must_be_offloaded_and_are_judged_as_documents() {
    let set = example();
    let good = headers(&[("Security-Label", "S")]);
    let content = "QUJD".repeat(300_000);
    let big = format!(r#"{{"uri": "u", "content": "{content}"}}"#);
    let v = judge(&set, None, &good, big.as_bytes(), false).unwrap_err();
    assert_eq!(v.rule, Rule::LfsRequired);
    assert!(
        v.message.contains("must be sent with the LFS_BLOB header"),
        "{v}"
    );
    // Offloaded: no size rule, but the document is still judged.
    judge(&set, None, &good, big.as_bytes(), true).unwrap();
    let bad = format!(r#"{{"content": "{content}"}}"#);
    let v = judge(&set, None, &good, bad.as_bytes(), true).unwrap_err();
    assert_eq!(v.rule, Rule::ValueJson);
}

#[test]
fn http_header_names_match_without_case() {
    let set = example();
    let policy = set.for_topic("documents").unwrap();
    let h = vec![("security-label".to_owned(), Bytes::from_static(b"S"))];
    policy
        .check(&RecordView {
            key: None,
            value: Some(GOOD_VALUE),
            value_size: GOOD_VALUE.len() as u64,
            headers: &HttpHeaders(&h),
            offloaded: false,
        })
        .unwrap();
}

#[test]
fn key_presence_sizes_and_allowed_values() {
    let yaml = r#"
policies:
  - name: strict
    topics: ["a*z"]
    action: dead_letter
    dead_letter_topic: strict.dlq
    headers:
      values:
        Exec-Path: { allowed: [ingester, crawler] }
    key: { presence: required, format: uuid, uuid_binary: true }
    max_value_bytes: 4
  - name: keyless
    topics: ["k"]
    key: { presence: forbidden }
"#;
    let set = PolicySet::parse(yaml, false).unwrap();
    assert_eq!(set.names(), ["strict", "keyless"]);
    let strict = set.for_topic("abcz").unwrap();
    assert!(set.for_topic("az").is_some() && set.for_topic("abc").is_none());
    assert_eq!(
        strict.action,
        Action::DeadLetter {
            topic: "strict.dlq".into()
        }
    );
    let check = |key: Option<&[u8]>, h: &[(&str, &str)], value: &[u8]| {
        strict
            .check(&RecordView {
                key,
                value: Some(value),
                value_size: value.len() as u64,
                headers: &headers(h),
                offloaded: false,
            })
            .map_err(|v| v.rule)
    };
    let uuid = b"33002C05-A04E-4915-9BF8-9FDF6E9096E6";
    assert_eq!(check(Some(uuid), &[], b"1234"), Ok(()));
    assert_eq!(check(Some(&[1; 16]), &[], b"1234"), Ok(()));
    assert_eq!(check(None, &[], b"1"), Err(Rule::KeyRequired));
    assert_eq!(check(Some(uuid), &[], b"12345"), Err(Rule::ValueMaxBytes));
    assert_eq!(check(Some(uuid), &[("Exec-Path", "crawler")], b"1"), Ok(()));
    assert_eq!(
        check(Some(uuid), &[("Exec-Path", "cron")], b"1"),
        Err(Rule::HeaderValue)
    );
    let keyless = set.for_topic("k").unwrap();
    let v = keyless
        .check(&RecordView {
            key: Some(b"x"),
            value: None,
            value_size: 0,
            headers: &headers(&[]),
            offloaded: false,
        })
        .unwrap_err();
    assert_eq!(v.rule, Rule::KeyForbidden);
}

#[test]
fn mistakes_in_the_file_are_named_with_their_line() {
    let cases = [
        ("policies:\n  - name: a\n    topics: [t]\n    hedaers: {}\n", "line 4", "unknown field `hedaers`"),
        ("policies:\n  - name: a\n    topics: [t]\n    key: { format: uuidd }\n", "line 4", "unknown variant `uuidd`"),
        ("policies:\n  - name: a\n    topics: [t]\n    headers:\n      values:\n        X: { pattern: '(' }\n", "line 2", "not a regular expression"),
        ("policies:\n  - name: a\n    topics: [t]\n    action: dead_letter\n", "line 2", "action dead_letter needs dead_letter_topic"),
        ("policies:\n  - name: a\n    topics: [t]\n    action: dead_letter\n    dead_letter_topic: t\n", "line 2", "is one of the policy's own topics"),
        ("policies:\n  - name: a\n    topics: [t]\n  - name: a\n    topics: [u]\n", "", "policy name a is used twice"),
        ("policies:\n  - name: a\n    topics: [t]\n    max_value_bytes: -1\n", "line 4", "invalid type: integer `-1`"),
    ];
    for (yaml, line, says) in cases {
        let e = PolicySet::parse(yaml, false).unwrap_err();
        assert!(e.contains(line) && e.contains(says), "{yaml}: {e}");
    }
    let e =
        PolicySet::parse("{\"policies\": [{\"name\": \"a\",\n \"topics\": 3}]}", true).unwrap_err();
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn a_reload_that_fails_keeps_the_policy_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, "policies:\n  - name: a\n    topics: [t]\n").unwrap();
    let book = PolicyBook::load(path.clone()).unwrap();
    assert_eq!(book.current().names(), ["a"]);
    std::fs::write(&path, "policies:\n  - name: b\n    topics: [t]\n").unwrap();
    book.reload().unwrap();
    assert_eq!(book.current().names(), ["b"]);
    std::fs::write(&path, "policies:\n  - name: c\n    topicz: [t]\n").unwrap();
    let e = book.reload().unwrap_err();
    assert!(e.to_string().contains("line 3"), "{e}");
    assert_eq!(book.current().names(), ["b"]);
}
