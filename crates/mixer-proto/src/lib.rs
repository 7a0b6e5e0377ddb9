//! Generated protobuf types (placeholder until the schema lands).
