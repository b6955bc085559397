//! `scrm emulator`: the WeCom emulator as a process (pending the testkit).
