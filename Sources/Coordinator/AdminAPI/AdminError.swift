import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Shared

/// A ``MusterError`` as an HTTP response: status from ``MusterError/Code/httpStatus``, body
/// `{"code": "TOKEN_EXPIRED", "message": …, "hint": …}`, and `Retry-After` when the database is away.
public struct AdminError: HTTPResponseError {
    public var error: MusterError
    /// Seconds a client should wait before retrying a `503`.
    public static let retryAfterSeconds = 5

    public init(_ error: MusterError) { self.error = error }

    public var status: HTTPResponse.Status { .init(code: error.code.httpStatus) }

    /// The JSON body of an error response.
    public struct Body: Codable, Sendable, Equatable {
        public var code: String
        public var message: String
        public var hint: String?
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if error.code.httpStatus == 503 { headers[.retryAfter] = "\(Self.retryAfterSeconds)" }
        let body = Body(code: error.code.wireName, message: error.message, hint: error.hint)
        let data = try MusterJSON.encoder().encode(body)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Turns every error thrown by a route into an ``AdminError`` response (and logs the unexpected ones), so API
/// clients always get `{code, message, hint}`.
struct AdminErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    typealias Input = Request
    typealias Output = Response
    func handle(_ request: Request, context: Context, next: @concurrent (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as MusterError {
            if error.code.httpStatus >= 500 {
                context.logger.warning("admin request failed", metadata: ["error": "\(error.debugDescription)"])
            }
            return try AdminError(error).response(from: request, context: context)
        } catch let error as HTTPError {
            let code: MusterError.Code =
                switch error.status.code {
                case 404: .notFound
                case 401: .unauthorized
                case 403: .forbidden
                case 400..<500: .invalidInput
                default: .internal
                }
            return try AdminError(MusterError(code, error.body ?? error.status.reasonPhrase)).response(
                from: request, context: context)
        } catch {
            context.logger.error("admin request failed", metadata: ["error": "\(String(reflecting: error))"])
            return try AdminError(MusterError(.internal, "internal error: \(error)")).response(
                from: request, context: context)
        }
    }
}

extension Response {
    /// A JSON response encoded with ``MusterJSON`` (sorted keys, ISO-8601 dates).
    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try MusterJSON.encoder().encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
