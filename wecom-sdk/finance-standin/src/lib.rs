//! Stand-in for libWeWorkFinanceSdk_C.so (being written).
