//! holdpoint's end-to-end tests live in `tests/`: the real runner and the
//! real bot together, on SQLite and PostgreSQL, driven by
//! `holdpoint-testkit`. This library is empty; cargo wants one target.
