//! The Kafka error codes the proxy itself sends or acts on, by name.
//!
//! Each is taken from `kafka_protocol::ResponseError`, so a number is never
//! written twice or wrong; match arms use these constants too.

use kafka_protocol::ResponseError as E;

pub const NONE: i16 = 0;
pub const REQUEST_TIMED_OUT: i16 = E::RequestTimedOut.code();
pub const OFFSET_OUT_OF_RANGE: i16 = E::OffsetOutOfRange.code();
pub const NOT_LEADER_OR_FOLLOWER: i16 = E::NotLeaderOrFollower.code();
pub const MESSAGE_TOO_LARGE: i16 = E::MessageTooLarge.code();
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = E::CoordinatorLoadInProgress.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = E::CoordinatorNotAvailable.code();
pub const NOT_COORDINATOR: i16 = E::NotCoordinator.code();
pub const ILLEGAL_GENERATION: i16 = E::IllegalGeneration.code();
pub const UNKNOWN_MEMBER_ID: i16 = E::UnknownMemberId.code();
pub const REBALANCE_IN_PROGRESS: i16 = E::RebalanceInProgress.code();
pub const UNSUPPORTED_SASL_MECHANISM: i16 = E::UnsupportedSaslMechanism.code();
pub const UNSUPPORTED_VERSION: i16 = E::UnsupportedVersion.code();
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = E::DuplicateSequenceNumber.code();
pub const KAFKA_STORAGE_ERROR: i16 = E::KafkaStorageError.code();
pub const SASL_AUTHENTICATION_FAILED: i16 = E::SaslAuthenticationFailed.code();
pub const MEMBER_ID_REQUIRED: i16 = E::MemberIdRequired.code();
pub const INVALID_RECORD: i16 = E::InvalidRecord.code();
pub const CORRUPT_MESSAGE: i16 = E::CorruptMessage.code();
pub const UNKNOWN_TOPIC_ID: i16 = E::UnknownTopicId.code();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbers_clients_know() {
        // The codes from the Kafka protocol guide that the proxy's answers
        // and tests rely on.
        assert_eq!(
            [
                OFFSET_OUT_OF_RANGE,
                NOT_LEADER_OR_FOLLOWER,
                MESSAGE_TOO_LARGE,
                COORDINATOR_LOAD_IN_PROGRESS,
                COORDINATOR_NOT_AVAILABLE,
                NOT_COORDINATOR,
                ILLEGAL_GENERATION,
                UNKNOWN_MEMBER_ID,
                REBALANCE_IN_PROGRESS,
                UNSUPPORTED_SASL_MECHANISM,
                UNSUPPORTED_VERSION,
                DUPLICATE_SEQUENCE_NUMBER,
                KAFKA_STORAGE_ERROR,
                SASL_AUTHENTICATION_FAILED,
                MEMBER_ID_REQUIRED,
                INVALID_RECORD,
            ],
            [1, 6, 10, 14, 15, 16, 22, 25, 27, 33, 35, 46, 56, 58, 79, 87]
        );
    }
}
