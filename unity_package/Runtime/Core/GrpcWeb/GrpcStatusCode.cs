namespace NpcServer.Dialogue
{
    /// <summary>gRPC status codes, as carried in the grpc-status trailer.</summary>
    public enum GrpcStatusCode
    {
        /// <summary>Success.</summary>
        Ok = 0,
        /// <summary>The call was cancelled (usually by the caller).</summary>
        Cancelled = 1,
        /// <summary>An unknown error.</summary>
        Unknown = 2,
        /// <summary>The request is malformed; the message says which field and what to fix.</summary>
        InvalidArgument = 3,
        /// <summary>The deadline passed before the reply finished.</summary>
        DeadlineExceeded = 4,
        /// <summary>A named persona, preset or model does not exist.</summary>
        NotFound = 5,
        /// <summary>Creating something whose id is taken.</summary>
        AlreadyExists = 6,
        /// <summary>The caller may not do this.</summary>
        PermissionDenied = 7,
        /// <summary>The server's generation queue is full; retry later.</summary>
        ResourceExhausted = 8,
        /// <summary>The system is not in a state to do this.</summary>
        FailedPrecondition = 9,
        /// <summary>The operation was aborted.</summary>
        Aborted = 10,
        /// <summary>A value is out of range.</summary>
        OutOfRange = 11,
        /// <summary>The server does not implement this RPC (or the URL is not a gRPC-Web endpoint).</summary>
        Unimplemented = 12,
        /// <summary>A server fault.</summary>
        Internal = 13,
        /// <summary>The server cannot be reached, or its model is not loaded yet.</summary>
        Unavailable = 14,
        /// <summary>Data was lost.</summary>
        DataLoss = 15,
        /// <summary>The API key is missing or wrong.</summary>
        Unauthenticated = 16,
    }
}
