import Foundation
import Testing

@testable import Shared

@Suite("seed.yaml: parsing and validation name the field and the problem")
struct SeedProfileTests {
    static let valid = """
        service:
          unit: app.service
          healthURL: http://127.0.0.1:8080/health
          healthTimeoutSeconds: 30
        databases:
          - path: /srv/app/data/app.db
            schema: app
            casts: ["events.payload:jsonb"]
        directories:
          - source: /srv/app/golden-repos
            destination: golden-repos
          - source: /srv/app/.versioned
            destination: versioned
        rewrites:
          - files: ["/srv/app/aliases/*.json"]
            fields: ["/path", "/snapshots/*/path"]
            prefixes:
              - {from: /srv/app/golden-repos, to: /mnt/shared/golden-repos}
        config:
          file: /etc/app/config.json
          format: json
          expect: {storage_mode: sqlite}
          set: {storage_mode: postgres, /database/url: "postgres://db/app"}
        volume:
          name: shared
          mountPath: /mnt/shared
        checks:
          - name: repositories listed
            url: http://127.0.0.1:8080/repos
            json: {/count: 20}
        module: app@1.0.0

        """

    @Test func aCompleteProfileParses() throws {
        let profile = try SeedProfile.parse(Self.valid, source: "seed.yaml")
        #expect(profile.service.unit == "app.service")
        #expect(profile.directories?.map(\.destination) == ["golden-repos", "versioned"])
        #expect(profile.rewrites?.first?.prefixes.first?.to == "/mnt/shared/golden-repos")
        #expect(profile.config?.set["/database/url"] == .string("postgres://db/app"))
        #expect(profile.checks?.first?.json?["/count"] == .number(20))
    }

    @Test(arguments: [
        ("unit: app.service", "unit: app", "service.unit: 'app' is not a service unit name"),
        ("healthURL: http://127.0.0.1:8080/health", "healthURL: localhost", "service.healthURL: 'localhost'"),
        ("healthTimeoutSeconds: 30", "healthTimeoutSecs: 30", "service.healthTimeoutSecs: unknown field"),
        ("- path: /srv/app/data/app.db", "- path: data/app.db", "databases[0].path: 'data/app.db' is not an absolute"),
        ("\"events.payload:jsonb\"", "\"payload:jsonb\"", "databases[0].casts[0]: 'payload:jsonb'"),
        ("destination: versioned", "destination: golden-repos", "directories[1].destination: 'golden-repos' is used twice"),
        ("destination: versioned", "destination: ../etc", "directories[1].destination: '../etc' must be a relative"),
        ("\"/snapshots/*/path\"", "\"snapshots/path\"", "rewrites[0].fields[1]: JSON pointer 'snapshots/path' must start"),
        ("to: /mnt/shared/golden-repos}", "to: mnt/x}", "rewrites[0].prefixes[0].to: 'mnt/x' is not an absolute"),
        ("format: json", "format: toml", "config.format"),
        ("mountPath: /mnt/shared", "mountPath: /mnt/../etc", "volume.mountPath: '/mnt/../etc' must not contain"),
        ("url: http://127.0.0.1:8080/repos", "url: ftp://x/repos", "checks[0].url"),
        ("module: app@1.0.0", "module: App Module", "module: 'App Module' is not NAME[@VERSION]"),
        ("  unit: app.service\n", "", "service.unit: missing (required)"),
    ])
    func eachProblemNamesItsField(_ replace: String, _ with: String, _ message: String) {
        let text = Self.valid.replacingOccurrences(of: replace, with: with)
        #expect(text != Self.valid)
        #expect {
            try SeedProfile.parse(text, source: "seed.yaml")
        } throws: { error in
            guard let error = error as? MusterError, error.code == .invalidInput else { return false }
            return error.message.hasPrefix("seed.yaml: ") && error.message.contains(message)
        }
    }

    @Test func directoriesWithoutAVolumeAreRefused() {
        let text = Self.valid.replacingOccurrences(of: "volume:\n  name: shared\n  mountPath: /mnt/shared\n", with: "")
        #expect {
            try SeedProfile.parse(text, source: "p.yaml")
        } throws: { ($0 as? MusterError)?.message.contains("volume: directories are copied") == true }
    }

    /// The example service's profile (examples/repo-service/seed.yaml) is valid for the real parser.
    @Test func theExampleServicesProfileParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let profile = try SeedProfile.load(path: root.appendingPathComponent("examples/repo-service/seed.yaml").path)
        #expect(profile.service.unit.hasSuffix(".service"))
        #expect(!(profile.checks ?? []).isEmpty)
    }

    @Test func aMissingFileIsNotFound() {
        #expect { try SeedProfile.load(path: "/nonexistent/seed.yaml") } throws: {
            ($0 as? MusterError)?.code == .notFound
        }
    }
}
