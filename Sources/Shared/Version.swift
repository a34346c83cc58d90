public enum MusterVersion { public static let current = "0.1.0" }
