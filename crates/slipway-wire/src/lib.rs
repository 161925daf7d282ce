//! Checked packet views, builders and checksums.
