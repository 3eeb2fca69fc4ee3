//! The frame reader and the request-header peek, on whatever a client
//! sends: a stream of length-prefixed frames, read until the first error.
#![no_main]

use kafka_lfs_proxy::kafka::wire::frame::{self, ByteBudget};
use libfuzzer_sys::fuzz_target;

/// Small enough that the fuzzer reaches "too large" and "over budget".
const MAX_FRAME: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let budget = ByteBudget::new(32 * 1024);
        let mut reader = data;
        while let Ok(Some((frame, _permit))) =
            frame::read_frame_within(&mut reader, MAX_FRAME, Some(&budget)).await
        {
            let body = frame.body();
            let _ = frame::peek_correlation_id(&body);
            if let Ok(header) = frame::peek_request_header(&body) {
                let _ = frame::expects_response(&header, &body);
                let _ = header.known_api();
            }
        }
    });
});
