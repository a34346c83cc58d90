import Testing

@Test func placeholderCoordinatorTests() { #expect(Bool(true)) }
