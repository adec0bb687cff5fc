using System;
using System.Collections.Generic;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// An RPC ended with a non-OK gRPC status. Subclasses name the statuses a game usually handles; every other
    /// status arrives as this class with <see cref="StatusCode"/> set. Cancellation by the caller's token is an
    /// <see cref="OperationCanceledException"/> instead, as everywhere in .NET.
    /// </summary>
    public class NpcRpcException : Exception
    {
        /// <summary>Creates the exception for a status and the server's message.</summary>
        public NpcRpcException(GrpcStatusCode statusCode, string statusMessage)
            : base(FormatMessage(statusCode, statusMessage))
        {
            StatusCode = statusCode;
            StatusMessage = statusMessage ?? "";
            Trailers = new Dictionary<string, string>();
        }

        /// <summary>The gRPC status code.</summary>
        public GrpcStatusCode StatusCode { get; private set; }

        /// <summary>The server's grpc-message, already percent-decoded (may be empty).</summary>
        public string StatusMessage { get; private set; }

        /// <summary>Every trailer (or trailers-only header) the server sent, keys in lower case.</summary>
        public IDictionary<string, string> Trailers { get; private set; }

        /// <summary>Builds the most specific exception type for a status.</summary>
        public static NpcRpcException FromStatus(GrpcStatusCode statusCode, string statusMessage,
            IDictionary<string, string> trailers)
        {
            NpcRpcException exception;
            switch (statusCode)
            {
                case GrpcStatusCode.NotFound:
                    exception = new NpcNotFoundException(statusMessage);
                    break;
                case GrpcStatusCode.InvalidArgument:
                    exception = new NpcInvalidArgumentException(statusMessage);
                    break;
                case GrpcStatusCode.AlreadyExists:
                    exception = new NpcAlreadyExistsException(statusMessage);
                    break;
                case GrpcStatusCode.Unavailable:
                    exception = new NpcUnavailableException(statusMessage);
                    break;
                case GrpcStatusCode.ResourceExhausted:
                    exception = new NpcBusyException(statusMessage);
                    break;
                default:
                    exception = new NpcRpcException(statusCode, statusMessage);
                    break;
            }
            if (trailers != null)
            {
                foreach (var pair in trailers) exception.Trailers[pair.Key] = pair.Value;
            }
            return exception;
        }

        static string FormatMessage(GrpcStatusCode statusCode, string statusMessage)
        {
            return string.IsNullOrEmpty(statusMessage) ? statusCode.ToString() : statusCode + ": " + statusMessage;
        }
    }

    /// <summary>NOT_FOUND: the persona (or preset, or model) named in the request does not exist.</summary>
    public sealed class NpcNotFoundException : NpcRpcException
    {
        /// <summary>Creates the exception with the server's message.</summary>
        public NpcNotFoundException(string statusMessage) : base(GrpcStatusCode.NotFound, statusMessage)
        {
        }
    }

    /// <summary>INVALID_ARGUMENT: the request is malformed; the message says which field and what to fix.</summary>
    public sealed class NpcInvalidArgumentException : NpcRpcException
    {
        /// <summary>Creates the exception with the server's message.</summary>
        public NpcInvalidArgumentException(string statusMessage) : base(GrpcStatusCode.InvalidArgument, statusMessage)
        {
        }
    }

    /// <summary>ALREADY_EXISTS: a persona with that id exists already.</summary>
    public sealed class NpcAlreadyExistsException : NpcRpcException
    {
        /// <summary>Creates the exception with the server's message.</summary>
        public NpcAlreadyExistsException(string statusMessage) : base(GrpcStatusCode.AlreadyExists, statusMessage)
        {
        }
    }

    /// <summary>UNAVAILABLE: the server cannot be reached, or has not loaded its model yet. Retrying may help.</summary>
    public sealed class NpcUnavailableException : NpcRpcException
    {
        /// <summary>Creates the exception with the server's (or the transport's) message.</summary>
        public NpcUnavailableException(string statusMessage) : base(GrpcStatusCode.Unavailable, statusMessage)
        {
        }
    }

    /// <summary>RESOURCE_EXHAUSTED: the server's generation queue is full. Retry after a moment.</summary>
    public sealed class NpcBusyException : NpcRpcException
    {
        /// <summary>Creates the exception with the server's message.</summary>
        public NpcBusyException(string statusMessage) : base(GrpcStatusCode.ResourceExhausted, statusMessage)
        {
        }
    }
}
