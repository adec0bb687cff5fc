using System;
using System.Threading;
using System.Threading.Tasks;
using NpcServer.Api.V1;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// One NPC's conversation with the player: the state a dialogue UI needs (who, which conversation, whether a
    /// line is being spoken, the text so far) and one line at a time. Engine-free; the Unity NpcSpeaker component
    /// wraps it. Events fire on the transport's thread; marshal them (see <see cref="MainThreadQueue"/>) before
    /// touching engine objects.
    /// </summary>
    public sealed class NpcConversation
    {
        readonly NpcClient _client;
        readonly object _gate = new object();
        CancellationTokenSource _current;
        string _partialText = "";

        /// <summary>Creates the conversation state for one persona and one game-chosen conversation id.</summary>
        public NpcConversation(NpcClient client, string personaId, string conversationId)
        {
            if (client == null) throw new ArgumentNullException("client");
            _client = client;
            PersonaId = personaId;
            ConversationId = conversationId;
            PlayerName = "";
        }

        /// <summary>
        /// A line passed its checks (not empty, not while another is spoken) and is being sent. Raised on the thread
        /// that called <see cref="SayAsync"/>, before any delta; a refused line raises nothing.
        /// </summary>
        public event Action LineStarted;

        /// <summary>A delta of the line being spoken arrived.</summary>
        public event Action<string> DeltaReceived;

        /// <summary>The line finished.</summary>
        public event Action<NpcLine> LineFinished;

        /// <summary>The line failed (an <see cref="NpcRpcException"/>, or OperationCanceledException when cancelled).</summary>
        public event Action<Exception> LineFailed;

        /// <summary>The persona id of the NPC ("tavern_keeper").</summary>
        public string PersonaId { get; set; }

        /// <summary>The game's id for this conversation (a player id, a save slot).</summary>
        public string ConversationId { get; set; }

        /// <summary>The player's name for the lines they say; empty means the persona's default.</summary>
        public string PlayerName { get; set; }

        /// <summary>Optional sampling preset for each line; empty means the persona's default.</summary>
        public string Preset { get; set; }

        /// <summary>Optional cap on reply tokens; 0 means the persona's or server's default.</summary>
        public int MaxTokens { get; set; }

        /// <summary>True while a line is being spoken.</summary>
        public bool IsTalking
        {
            get
            {
                lock (_gate) return _current != null;
            }
        }

        /// <summary>The text of the line being spoken so far (empty when idle).</summary>
        public string PartialText
        {
            get
            {
                lock (_gate) return _partialText;
            }
        }

        /// <summary>The last line the NPC finished, or null.</summary>
        public NpcLine LastLine { get; private set; }

        /// <summary>
        /// The player says <paramref name="text"/>; returns the NPC's finished line. One line at a time: throws
        /// <see cref="InvalidOperationException"/> while a line is being spoken (call <see cref="Cancel"/> first).
        /// </summary>
        public async Task<NpcLine> SayAsync(string text, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (string.IsNullOrEmpty(text) || text.Trim().Length == 0)
            {
                throw new ArgumentException("the player's line must not be empty", "text");
            }
            CancellationTokenSource source;
            lock (_gate)
            {
                if (_current != null)
                {
                    throw new InvalidOperationException(
                        "NPC '" + PersonaId + "' is still speaking; call Cancel() before saying another line");
                }
                source = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                _current = source;
                _partialText = "";
            }
            var request = new TalkRequest
            {
                PersonaId = PersonaId,
                ConversationId = ConversationId,
                Text = text,
                PlayerName = PlayerName ?? "",
            };
            if (!string.IsNullOrEmpty(Preset)) request.Preset = Preset;
            if (MaxTokens > 0) request.MaxTokens = MaxTokens;
            try
            {
                var started = LineStarted;
                if (started != null) started();
                var line = await _client.TalkAsync(request, new DeltaSink(this), source.Token).ConfigureAwait(false);
                lock (_gate) LastLine = line;
                Finish(source);
                var finished = LineFinished;
                if (finished != null) finished(line);
                return line;
            }
            catch (Exception e)
            {
                Finish(source);
                var failed = LineFailed;
                if (failed != null) failed(e);
                throw;
            }
        }

        /// <summary>Stops the line being spoken, if any. The server stores no turn for it.</summary>
        public void Cancel()
        {
            lock (_gate)
            {
                if (_current != null) _current.Cancel();
            }
        }

        /// <summary>Exports this conversation as a save-file string (see <see cref="ConversationSave"/>).</summary>
        public async Task<string> ExportAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            var conversation = await _client.ExportConversationAsync(PersonaId, ConversationId, cancellationToken)
                .ConfigureAwait(false);
            return ConversationSave.ToSaveString(conversation);
        }

        /// <summary>
        /// Restores this conversation from a save-file string, replacing what the server held. The saved turns go
        /// to this object's persona and conversation id, so a save can also be loaded into another slot. Returns
        /// how many turns were restored.
        /// </summary>
        public Task<int> ImportAsync(string saved, CancellationToken cancellationToken = default(CancellationToken))
        {
            var conversation = ConversationSave.FromSaveString(saved);
            conversation.PersonaId = PersonaId;
            conversation.ConversationId = ConversationId;
            return _client.ImportConversationAsync(conversation, cancellationToken);
        }

        /// <summary>Forgets every turn of this conversation; returns how many were forgotten.</summary>
        public Task<int> ResetAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            return _client.ResetConversationAsync(PersonaId, ConversationId, cancellationToken);
        }

        void Finish(CancellationTokenSource source)
        {
            lock (_gate)
            {
                if (_current == source)
                {
                    _current = null;
                    _partialText = "";
                }
            }
            source.Dispose();
        }

        void OnDelta(string delta)
        {
            lock (_gate) _partialText += delta;
            var received = DeltaReceived;
            if (received != null) received(delta);
        }

        // Calls back synchronously, in order (Progress<T> would post to a thread pool and could reorder deltas).
        sealed class DeltaSink : IProgress<string>
        {
            readonly NpcConversation _owner;

            public DeltaSink(NpcConversation owner)
            {
                _owner = owner;
            }

            public void Report(string value)
            {
                _owner.OnDelta(value);
            }
        }
    }
}
