//! ISOLATION: `Tenant` and `TenantBridge` can only come out of the tenant repository. Each case
//! under `ui/` tries another way to forge one and must fail to compile.

#[test]
fn tenant_capability_types_cannot_be_forged_outside_the_repository() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
