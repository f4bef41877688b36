//! The protocol's enforced limits. Documented in docs/protocol.md and sent in the hello response.

/// The largest encoded message in one frame (the varint length prefix not counted).
pub const MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;
/// The largest key, and the largest map key.
pub const MAX_KEY_BYTES: u32 = 64 * 1024;
/// The largest single value (a value-state value, a list element, a map value).
pub const MAX_VALUE_BYTES: u32 = 8 * 1024 * 1024;
/// The most ops in one write batch, and the most keys in one multi-get.
pub const MAX_BATCH_OPS: u32 = 10_000;
/// The most entries in one map-iteration page.
pub const MAX_PAGE_ENTRIES: u32 = 10_000;
/// Entries per page when the client does not say.
pub const DEFAULT_PAGE_ENTRIES: u32 = 1_000;
/// The most key and value bytes in one map-iteration page (always at least one entry); the rest
/// follows on the next page.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// The most value bytes one answer may carry (a multi-get, a whole list): it must fit in one
/// frame. A larger one is refused with `TOO_LARGE` (ask for fewer keys, read the list in pages),
/// never sent as an unreadable frame.
pub const MAX_ANSWER_BYTES: usize = 15 * 1024 * 1024;
/// The most stored bytes of one list: its elements plus [`LIST_ELEMENT_OVERHEAD`] each. An
/// append or set that would pass it is refused with `TOO_LARGE`; a list this large is read in
/// pages.
pub const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;
/// Stored bytes per list element besides its own (expiry and length).
pub const LIST_ELEMENT_OVERHEAD: usize = 12;
/// The longest state name.
pub const MAX_STATE_NAME_BYTES: usize = 200;

pub fn limits() -> crate::proto::Limits {
    crate::proto::Limits {
        max_frame_bytes: MAX_FRAME_BYTES,
        max_key_bytes: MAX_KEY_BYTES,
        max_value_bytes: MAX_VALUE_BYTES,
        max_batch_ops: MAX_BATCH_OPS,
        max_page_entries: MAX_PAGE_ENTRIES,
        default_page_entries: DEFAULT_PAGE_ENTRIES,
        max_list_bytes: MAX_LIST_BYTES as u32,
        max_page_bytes: MAX_PAGE_BYTES as u32,
    }
}
