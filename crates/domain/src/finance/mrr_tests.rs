//! Tests of the MRR rules.
