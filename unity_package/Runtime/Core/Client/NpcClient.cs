using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using NpcServer.Api.V1;
using NpcServer.Dialogue.GrpcWeb;
using NpcServer.Dialogue.Protobuf;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// The npcserver client: every RPC of the API over gRPC-Web on HTTP/1.1, through any
    /// <see cref="INpcTransport"/>. Async methods take a <see cref="CancellationToken"/> last; cancelling aborts the
    /// HTTP request, which makes the server stop generating. Streaming methods report each delta through an
    /// <see cref="IProgress{T}"/>, called on the transport's thread in arrival order (wrap it, or use
    /// <see cref="NpcConversation"/> and a main-thread queue, to touch engine objects). Thread-safe.
    /// </summary>
    public sealed class NpcClient
    {
        /// <summary>The content type of binary gRPC-Web.</summary>
        public const string ContentType = "application/grpc-web+proto";

        /// <summary>
        /// The header with the conversation key ("persona/conversation") that a proxy in front of several servers
        /// hashes on, so a conversation stays on the server whose cache holds it. Sent on every Talk.
        /// </summary>
        public const string ConversationHeader = "x-npc-conversation";

        readonly INpcTransport _transport;
        readonly string _apiKey;

        /// <summary>Creates a client. <paramref name="apiKey"/>, when set, is sent as "authorization: Bearer".</summary>
        public NpcClient(INpcTransport transport, string apiKey = null)
        {
            if (transport == null) throw new ArgumentNullException("transport");
            _transport = transport;
            _apiKey = string.IsNullOrEmpty(apiKey) ? null : apiKey.Trim();
        }

        /// <summary>The transport the client sends through.</summary>
        public INpcTransport Transport
        {
            get { return _transport; }
        }

        /// <summary>
        /// Checks and tidies a server URL ("http://host:port", optionally with a path prefix) and drops the
        /// trailing slash. Throws <see cref="ArgumentException"/> saying what to fix.
        /// </summary>
        public static string NormalizeBaseUrl(string url)
        {
            string trimmed = (url ?? "").Trim();
            Uri uri;
            if (!Uri.TryCreate(trimmed, UriKind.Absolute, out uri) || (uri.Scheme != "http" && uri.Scheme != "https"))
            {
                throw new ArgumentException("server URL must be absolute http:// or https://, like "
                                            + "http://127.0.0.1:8080; got '" + trimmed + "'", "url");
            }
            if (!string.IsNullOrEmpty(uri.Query) || !string.IsNullOrEmpty(uri.Fragment))
            {
                throw new ArgumentException("server URL must not have a query or fragment; got '" + trimmed + "'",
                    "url");
            }
            return trimmed.TrimEnd('/');
        }

        /// <summary>
        /// The player says a line to an NPC. Each delta of the NPC's reply goes to <paramref name="onDelta"/> as it
        /// is sampled; the task returns the finished line. The turn is stored by the server only when the reply
        /// completes, so a cancelled call leaves the conversation as it was.
        /// </summary>
        public Task<NpcLine> TalkAsync(TalkRequest request, IProgress<string> onDelta,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            return TalkAsync(request, onDelta, null, cancellationToken);
        }

        /// <summary>
        /// <see cref="TalkAsync(TalkRequest, IProgress{string}, CancellationToken)"/>, and each action the NPC calls
        /// goes to <paramref name="onActionCall"/> in the reply's order (between the deltas around it).
        /// </summary>
        public async Task<NpcLine> TalkAsync(TalkRequest request, IProgress<string> onDelta,
            IProgress<NpcActionCall> onActionCall, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (request == null) throw new ArgumentNullException("request");
            // One id per line, kept in the request: sending the same request again (after UNAVAILABLE or ABORTED)
            // retries the line, and a line the server already stored comes back as stored, never twice.
            if (string.IsNullOrEmpty(request.RequestId)) request.RequestId = Guid.NewGuid().ToString("N");
            var headers = BuildHeaders();
            headers[ConversationHeader] = Uri.EscapeDataString(request.PersonaId) + "/"
                                          + Uri.EscapeDataString(request.ConversationId);
            CompletionFinal final = null;
            await SendStreamingAsync<TalkRequest, TalkResponse>(ConversationServicePaths.Talk, request,
                response =>
                {
                    if (response.Delta != null && onDelta != null) onDelta.Report(response.Delta.Content);
                    if (response.ActionCall != null && onActionCall != null)
                    {
                        onActionCall.Report(new NpcActionCall(response.ActionCall));
                    }
                    if (response.Final != null) final = response.Final;
                }, headers, cancellationToken).ConfigureAwait(false);
            if (final == null)
            {
                throw NpcRpcException.FromStatus(GrpcStatusCode.Internal, "Talk stream ended with no final message",
                    null);
            }
            return new NpcLine(final);
        }

        /// <summary>Shorthand for <see cref="TalkAsync(TalkRequest, IProgress{string}, CancellationToken)"/>.</summary>
        public Task<NpcLine> TalkAsync(string personaId, string conversationId, string text, IProgress<string> onDelta,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var request = new TalkRequest { PersonaId = personaId, ConversationId = conversationId, Text = text };
            return TalkAsync(request, onDelta, cancellationToken);
        }

        /// <summary>Streams an OpenAI-style chat completion; returns its final message.</summary>
        public async Task<CompletionFinal> StreamChatCompletionAsync(StreamChatCompletionRequest request,
            IProgress<string> onDelta, CancellationToken cancellationToken = default(CancellationToken))
        {
            CompletionFinal final = null;
            await ServerStreamingAsync<StreamChatCompletionRequest, StreamChatCompletionResponse>(
                ChatServicePaths.StreamChatCompletion, request, response =>
                {
                    if (response.Delta != null && onDelta != null) onDelta.Report(response.Delta.Content);
                    if (response.Final != null) final = response.Final;
                }, cancellationToken).ConfigureAwait(false);
            if (final == null)
            {
                throw NpcRpcException.FromStatus(GrpcStatusCode.Internal, "chat stream ended with no final message",
                    null);
            }
            return final;
        }

        /// <summary>Returns one persona; throws <see cref="NpcNotFoundException"/> when it does not exist.</summary>
        public async Task<Persona> GetPersonaAsync(string personaId,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var response = await UnaryAsync<GetPersonaRequest, GetPersonaResponse>(PersonaServicePaths.GetPersona,
                new GetPersonaRequest { PersonaId = personaId }, cancellationToken).ConfigureAwait(false);
            return response.Persona;
        }

        /// <summary>Lists personas ordered by id, one page at a time.</summary>
        public Task<ListPersonasResponse> ListPersonasAsync(int pageSize, string pageToken,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            return UnaryAsync<ListPersonasRequest, ListPersonasResponse>(PersonaServicePaths.ListPersonas,
                new ListPersonasRequest { PageSize = pageSize, PageToken = pageToken ?? "" }, cancellationToken);
        }

        /// <summary>Returns a conversation's stored turns, oldest first (none when it has none).</summary>
        public async Task<Conversation> GetConversationAsync(string personaId, string conversationId,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var response = await UnaryAsync<GetConversationRequest, GetConversationResponse>(
                ConversationServicePaths.GetConversation,
                new GetConversationRequest { PersonaId = personaId, ConversationId = conversationId },
                cancellationToken).ConfigureAwait(false);
            return response.Conversation ?? new Conversation { PersonaId = personaId, ConversationId = conversationId };
        }

        /// <summary>Forgets every turn of a conversation; returns how many were forgotten.</summary>
        public async Task<int> ResetConversationAsync(string personaId, string conversationId,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var response = await UnaryAsync<ResetConversationRequest, ResetConversationResponse>(
                ConversationServicePaths.ResetConversation,
                new ResetConversationRequest { PersonaId = personaId, ConversationId = conversationId },
                cancellationToken).ConfigureAwait(false);
            return response.DeletedTurns;
        }

        /// <summary>Returns a whole conversation for a save file (see <see cref="ConversationSave"/>).</summary>
        public async Task<Conversation> ExportConversationAsync(string personaId, string conversationId,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var response = await UnaryAsync<ExportConversationRequest, ExportConversationResponse>(
                ConversationServicePaths.ExportConversation,
                new ExportConversationRequest { PersonaId = personaId, ConversationId = conversationId },
                cancellationToken).ConfigureAwait(false);
            return response.Conversation ?? new Conversation { PersonaId = personaId, ConversationId = conversationId };
        }

        /// <summary>
        /// Restores a conversation from a save file, replacing what the server held for its persona and id;
        /// returns how many turns were restored.
        /// </summary>
        public async Task<int> ImportConversationAsync(Conversation conversation,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            if (conversation == null) throw new ArgumentNullException("conversation");
            var response = await UnaryAsync<ImportConversationRequest, ImportConversationResponse>(
                ConversationServicePaths.ImportConversation, new ImportConversationRequest { Conversation = conversation },
                cancellationToken).ConfigureAwait(false);
            return response.ImportedTurns;
        }

        /// <summary>
        /// Records a fact the NPC remembers in this conversation ("the player returned the ring"), importance 1 (trivia)
        /// to 10; it is recalled into the prompt when a line makes it relevant. RESOURCE_EXHAUSTED past the server's
        /// max_memories.
        /// </summary>
        public async Task<Memory> AddMemoryAsync(string personaId, string conversationId, string text, int importance = 5,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var response = await UnaryAsync<AddMemoryRequest, AddMemoryResponse>(KnowledgeServicePaths.AddMemory,
                new AddMemoryRequest
                {
                    PersonaId = personaId, ConversationId = conversationId,
                    Memory = new Memory { Text = text ?? "", Importance = importance },
                },
                cancellationToken).ConfigureAwait(false);
            return response.Memory;
        }

        /// <summary>Returns a conversation's memories, oldest first.</summary>
        public async Task<List<Memory>> ListMemoriesAsync(string personaId, string conversationId,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var memories = new List<Memory>();
            string token = "";
            do
            {
                var response = await UnaryAsync<ListMemoriesRequest, ListMemoriesResponse>(
                    KnowledgeServicePaths.ListMemories,
                    new ListMemoriesRequest
                    {
                        PersonaId = personaId, ConversationId = conversationId, PageSize = 1000, PageToken = token,
                    },
                    cancellationToken).ConfigureAwait(false);
                memories.AddRange(response.Memories);
                token = response.NextPageToken ?? "";
            } while (token.Length > 0);
            return memories;
        }

        /// <summary>Forgets one memory (NOT_FOUND when the conversation has no such memory).</summary>
        public Task DeleteMemoryAsync(string personaId, string conversationId, long memoryId,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            return UnaryAsync<DeleteMemoryRequest, DeleteMemoryResponse>(KnowledgeServicePaths.DeleteMemory,
                new DeleteMemoryRequest { PersonaId = personaId, ConversationId = conversationId, MemoryId = memoryId },
                cancellationToken);
        }

        /// <summary>Returns the rolling summary of the turns that no longer fit in the prompt ("" when none yet).</summary>
        public async Task<string> GetSummaryAsync(string personaId, string conversationId,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var response = await UnaryAsync<GetSummaryRequest, GetSummaryResponse>(KnowledgeServicePaths.GetSummary,
                new GetSummaryRequest { PersonaId = personaId, ConversationId = conversationId },
                cancellationToken).ConfigureAwait(false);
            return response.Summary != null ? response.Summary.Text : "";
        }

        /// <summary>Replaces the rolling summary with the game's own text ("" removes it).</summary>
        public async Task<ConversationSummary> SetSummaryAsync(string personaId, string conversationId, string text,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var response = await UnaryAsync<SetSummaryRequest, SetSummaryResponse>(KnowledgeServicePaths.SetSummary,
                new SetSummaryRequest
                {
                    PersonaId = personaId, ConversationId = conversationId,
                    Summary = new ConversationSummary { Text = text ?? "" },
                },
                cancellationToken).ConfigureAwait(false);
            return response.Summary ?? new ConversationSummary();
        }

        /// <summary>Lists the server's sampling presets.</summary>
        public Task<ListPresetsResponse> ListPresetsAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            return UnaryAsync<ListPresetsRequest, ListPresetsResponse>(PresetServicePaths.ListPresets,
                new ListPresetsRequest(), cancellationToken);
        }

        /// <summary>Lists the server's loaded models (a cheap way to check the connection).</summary>
        public async Task<List<Model>> ListModelsAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            var response = await UnaryAsync<ListModelsRequest, ListModelsResponse>(ModelServicePaths.ListModels,
                new ListModelsRequest(), cancellationToken).ConfigureAwait(false);
            return response.Models;
        }

        /// <summary>Calls any unary RPC by path.</summary>
        public async Task<TResponse> UnaryAsync<TRequest, TResponse>(string path, TRequest request,
            CancellationToken cancellationToken = default(CancellationToken))
            where TRequest : IProtoMessage
            where TResponse : class, IProtoMessage, new()
        {
            TResponse result = null;
            await ServerStreamingAsync<TRequest, TResponse>(path, request, response =>
            {
                if (result != null)
                {
                    throw NpcRpcException.FromStatus(GrpcStatusCode.Internal, "unary RPC " + path
                                                                              + " returned more than one message", null);
                }
                result = response;
            }, cancellationToken).ConfigureAwait(false);
            if (result == null)
            {
                throw NpcRpcException.FromStatus(GrpcStatusCode.Internal, "unary RPC " + path + " returned no message",
                    null);
            }
            return result;
        }

        /// <summary>
        /// Calls any server-streaming RPC by path. <paramref name="onMessage"/> runs for each message as it arrives,
        /// on the transport's thread. The task completes after the OK trailer and throws
        /// <see cref="NpcRpcException"/> (or a subclass) for any other status.
        /// </summary>
        public Task ServerStreamingAsync<TRequest, TResponse>(string path, TRequest request,
            Action<TResponse> onMessage, CancellationToken cancellationToken = default(CancellationToken))
            where TRequest : IProtoMessage
            where TResponse : IProtoMessage, new()
        {
            return SendStreamingAsync(path, request, onMessage, BuildHeaders(), cancellationToken);
        }

        async Task SendStreamingAsync<TRequest, TResponse>(string path, TRequest request,
            Action<TResponse> onMessage, Dictionary<string, string> headers, CancellationToken cancellationToken)
            where TRequest : IProtoMessage
            where TResponse : IProtoMessage, new()
        {
            if (request == null) throw new ArgumentNullException("request");
            var body = GrpcWebFraming.EncodeMessage(ProtoWriter.Serialize(request));
            var reader = new GrpcWebResponseReader<TResponse>(onMessage);
            await _transport.SendAsync(new NpcHttpRequest(path, body, headers), reader, cancellationToken)
                .ConfigureAwait(false);
            reader.Complete();
        }

        Dictionary<string, string> BuildHeaders()
        {
            var headers = new Dictionary<string, string>
            {
                { "content-type", ContentType },
                { "accept", ContentType },
                { "x-grpc-web", "1" },
            };
            if (_apiKey != null) headers["authorization"] = "Bearer " + _apiKey;
            return headers;
        }
    }
}
