//! Attribute values, the attribute vocabulary, attribute bags and referenced-attribute tracking.
//!
//! Everything the pipeline evaluates is an *attribute*: a name from a [`Vocabulary`] (interned to
//! an [`AttrId`] at config time) bound to a typed [`Value`]. Hosts fill an [`Attributes`] bag per
//! request, borrowing strings from their own buffers where they can; attribute-producing adapters
//! add a layer on top without copying ([`LayeredBag`]). Expressions record which attributes they
//! looked at in a [`ReferencedAttributes`]; the check cache keys on that record.
#![forbid(unsafe_code)]

mod bag;
pub mod compressed;
pub mod ingest;
pub mod json;
mod referenced;
mod time_values;
mod value;
mod vocabulary;

pub use bag::{Attributes, Bag, LayeredBag};
pub use compressed::{
    DecodeError, GLOBAL_WORD_COUNT, GLOBAL_WORDS, decode, decode_bytes, encode, encode_bytes,
    global_word_index,
};
pub use referenced::{Presence, Reference, ReferenceRecorder, ReferencedAttributes};
pub use time_values::{Duration, TimeParseError, Timestamp};
pub use value::{StringMap, StringMapRef, StringMapView, Value, ValueType, ValueTypeParseError};
pub use vocabulary::{AttrId, ISTIO_ATTRIBUTES, Vocabulary, VocabularyError, well_known};
