//! The streamed Fetch relay on any response a broker can send: the first
//! two bytes pick the version, the rest is the response body (correlation
//! id first). Whatever happens, the client never receives more bytes than
//! the frame's length says, and a relayed frame keeps its length.
#![no_main]

use kafka_lfs_proxy::kafka::relay::fetch_stream::relay_fetch_response;
use libfuzzer_sys::fuzz_target;
use tokio::io::BufReader;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let version = i16::from_be_bytes([data[0], data[1]]).rem_euclid(18);
    let body = &data[2..];
    let mut head = Vec::with_capacity(8);
    head.extend_from_slice(&(body.len() as i32).to_be_bytes());
    head.extend_from_slice(&body[..4]);
    let remaining = body.len() - 4;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut upstream = BufReader::with_capacity(512, &body[4..]);
        let mut client: Vec<u8> = Vec::new();
        let relayed =
            relay_fetch_response(&mut upstream, &mut client, &head, remaining, version).await;
        assert!(client.len() <= head.len() + remaining);
        if relayed.is_ok() {
            assert_eq!(
                client.len(),
                head.len() + remaining,
                "a relayed frame keeps its length"
            );
        }
    });
});
