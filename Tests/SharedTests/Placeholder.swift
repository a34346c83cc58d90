import Testing

@Test func placeholderSharedTests() { #expect(Bool(true)) }
