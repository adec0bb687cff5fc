using System;
using System.Threading;
using System.Threading.Tasks;
using UnityEngine;
using UnityEngine.Events;

namespace NpcServer.Dialogue.Unity
{
    /// <summary>
    /// Puts an NPC on a GameObject: set the persona id and conversation id, call <see cref="Say"/> with the
    /// player's line, and receive the NPC's reply through UnityEvents (wire them in the inspector) or C# events.
    /// Every event is raised on the main thread, in Update, however the transport delivers its chunks.
    /// </summary>
    [AddComponentMenu("NPC Dialogue/NPC Speaker")]
    [DisallowMultipleComponent]
    public sealed class NpcSpeaker : MonoBehaviour
    {
        [Tooltip("Where the npcserver runs. Create one with Assets > Create > NPC Dialogue > Connection Settings.")]
        [SerializeField]
        NpcConnectionSettings settings;

        [Tooltip("The persona id on the server, for example tavern_keeper.")]
        [SerializeField]
        string personaId = "tavern_keeper";

        [Tooltip("The game's id for this conversation: a player id or save slot. The server remembers it.")]
        [SerializeField]
        string conversationId = "player";

        [Tooltip("How the player is named in the conversation. Empty uses the persona's default.")]
        [SerializeField]
        string playerName = "";

        [Tooltip("Optional sampling preset (factual, dialogue, storytelling, ...). Empty uses the persona's.")]
        [SerializeField]
        string preset = "";

        [Tooltip("Most tokens in a reply. 0 uses the persona's or server's default.")]
        [Min(0)]
        [SerializeField]
        int maxTokens = 0;

        [Header("Events (raised on the main thread)")]
        [Tooltip("The NPC started a reply.")]
        public UnityEvent onLineStarted = new UnityEvent();

        [Tooltip("A piece of the reply arrived (bind an NpcNarrator's Append here).")]
        public NpcTextEvent onDelta = new NpcTextEvent();

        [Tooltip("The reply finished: its text, and the structured payload as JSON (empty for free text).")]
        public NpcLineEvent onLineFinished = new NpcLineEvent();

        [Tooltip("A reply or save/load failed: the message says what went wrong.")]
        public NpcTextEvent onError = new NpcTextEvent();

        readonly MainThreadQueue _mainThread = new MainThreadQueue();
        NpcConversation _conversation;
        NpcClient _client;

        /// <summary>The NPC started a reply (main thread). A line refused before sending raises only Failed.</summary>
        public event Action LineStarted;

        /// <summary>A piece of the reply arrived (main thread).</summary>
        public event Action<string> DeltaReceived;

        /// <summary>The reply finished (main thread).</summary>
        public event Action<NpcLine> LineFinished;

        /// <summary>A reply or a save/load call failed (main thread). Cancellation is not reported here.</summary>
        public event Action<Exception> Failed;

        /// <summary>The connection settings asset.</summary>
        public NpcConnectionSettings Settings
        {
            get { return settings; }
            set
            {
                settings = value;
                _client = null;
                _conversation = null;
            }
        }

        /// <summary>The persona id of this NPC.</summary>
        public string PersonaId
        {
            get { return personaId; }
            set { personaId = value; }
        }

        /// <summary>The game's id for this conversation.</summary>
        public string ConversationId
        {
            get { return conversationId; }
            set { conversationId = value; }
        }

        /// <summary>The player's name in this conversation (empty: the persona's default).</summary>
        public string PlayerName
        {
            get { return playerName; }
            set { playerName = value; }
        }

        /// <summary>True while the NPC is replying.</summary>
        public bool IsTalking
        {
            get { return _conversation != null && _conversation.IsTalking; }
        }

        /// <summary>The text of the reply so far (empty when idle).</summary>
        public string PartialText
        {
            get { return _conversation == null ? "" : _conversation.PartialText; }
        }

        /// <summary>The last finished line, or null.</summary>
        public NpcLine LastLine
        {
            get { return _conversation == null ? null : _conversation.LastLine; }
        }

        /// <summary>
        /// Uses a client of your own instead of one built from <see cref="Settings"/>: another transport, a shared
        /// client, or a test double.
        /// </summary>
        public void UseClient(NpcClient client)
        {
            _client = client;
            _conversation = null;
        }

        /// <summary>
        /// The player says a line. Fire-and-forget, for UI events (a button, an input field's onEndEdit): the reply
        /// and any error arrive through the events.
        /// </summary>
        public void Say(string text)
        {
            _ = SayObservedAsync(text);
        }

        /// <summary>
        /// The player says a line; returns the finished reply. The events fire too. Throws what the call failed
        /// with (also reported through onError), or OperationCanceledException when cancelled.
        /// </summary>
        public async Task<NpcLine> SayAsync(string text, CancellationToken cancellationToken = default(CancellationToken))
        {
            try
            {
                // LineStarted comes from the conversation once the line is accepted: a refused line (empty, or
                // said while the NPC is still talking) must not clear a narrator that is typing the current one.
                return await PrepareConversation().SayAsync(text, cancellationToken);
            }
            catch (Exception e)
            {
                ReportFailure(e);
                throw;
            }
        }

        /// <summary>Stops the current reply. The server stores no turn for it.</summary>
        public void Cancel()
        {
            if (_conversation != null) _conversation.Cancel();
        }

        /// <summary>Exports the conversation as a string for a save file.</summary>
        public async Task<string> ExportConversationAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            try
            {
                return await PrepareConversation().ExportAsync(cancellationToken);
            }
            catch (Exception e)
            {
                ReportFailure(e);
                throw;
            }
        }

        /// <summary>
        /// Restores the conversation from a string that <see cref="ExportConversationAsync"/> wrote, replacing what
        /// the server held for this persona and conversation id. Returns how many turns were restored.
        /// </summary>
        public async Task<int> ImportConversationAsync(string saved,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            try
            {
                return await PrepareConversation().ImportAsync(saved, cancellationToken);
            }
            catch (Exception e)
            {
                ReportFailure(e);
                throw;
            }
        }

        /// <summary>Forgets the conversation on the server; returns how many turns were forgotten.</summary>
        public async Task<int> ResetConversationAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            try
            {
                return await PrepareConversation().ResetAsync(cancellationToken);
            }
            catch (Exception e)
            {
                ReportFailure(e);
                throw;
            }
        }

        /// <summary>
        /// Raises every pending event now. Update calls it each frame; call it yourself only where Update does not
        /// run (edit-mode tests).
        /// </summary>
        public int DispatchPendingEvents()
        {
            return _mainThread.Drain(Debug.LogException);
        }

        void Update()
        {
            DispatchPendingEvents();
        }

        void OnDisable()
        {
            Cancel();
        }

        NpcConversation PrepareConversation()
        {
            if (_client == null)
            {
                if (settings == null)
                {
                    throw new InvalidOperationException("NpcSpeaker on '" + name + "' has no connection settings: "
                        + "create one with Assets > Create > NPC Dialogue > Connection Settings and assign it");
                }
                _client = settings.CreateClient();
            }
            if (_conversation == null)
            {
                _conversation = new NpcConversation(_client, personaId, conversationId);
                _conversation.LineStarted += () => _mainThread.Post(RaiseLineStarted);
                _conversation.DeltaReceived += delta => _mainThread.Post(() => RaiseDelta(delta));
                _conversation.LineFinished += line => _mainThread.Post(() => RaiseLineFinished(line));
            }
            // Inspector fields may change between lines; the next line uses their current values.
            _conversation.PersonaId = personaId;
            _conversation.ConversationId = conversationId;
            _conversation.PlayerName = playerName;
            _conversation.Preset = preset;
            _conversation.MaxTokens = maxTokens;
            return _conversation;
        }

        async Task SayObservedAsync(string text)
        {
            try
            {
                await SayAsync(text);
            }
            catch (Exception)
            {
                // Already reported through onError/Failed; catching keeps the task from going unobserved.
            }
        }

        void ReportFailure(Exception e)
        {
            if (e is OperationCanceledException) return;
            _mainThread.Post(() =>
            {
                onError.Invoke(e.Message);
                var failed = Failed;
                if (failed != null) failed(e);
            });
        }

        void RaiseLineStarted()
        {
            onLineStarted.Invoke();
            var started = LineStarted;
            if (started != null) started();
        }

        void RaiseDelta(string delta)
        {
            onDelta.Invoke(delta);
            var received = DeltaReceived;
            if (received != null) received(delta);
        }

        void RaiseLineFinished(NpcLine line)
        {
            onLineFinished.Invoke(line.Text, line.StructuredJson ?? "");
            var finished = LineFinished;
            if (finished != null) finished(line);
        }
    }
}
