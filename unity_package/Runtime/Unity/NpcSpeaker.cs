using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using NpcServer.Api.V1;
using UnityEngine;
using UnityEngine.Events;
using Action = System.Action; // the proto's Action message would make the delegate ambiguous

namespace NpcServer.Dialogue.Unity
{
    /// <summary>
    /// Puts an NPC on a GameObject: set the persona id and conversation id, call <see cref="Say"/> with the
    /// player's line, and receive the NPC's reply through UnityEvents (wire them in the inspector) or C# events.
    /// Every event is raised on the main thread, in Update, however the transport delivers its chunks.
    /// Actions: bind them in the inspector (a UnityEvent per action) or register a delegate with
    /// <see cref="RegisterAction(string, string, string, bool, Func{NpcActionCall, string})"/> or
    /// <see cref="HandleAction(string, Func{NpcActionCall, string})"/>; handlers run on the main thread, and an action
    /// that awaits its result sends what the handler returns back to the NPC, who then speaks about it.
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

        [Header("Actions")]
        [Tooltip("Actions the NPC can take: the persona's own (handled here) or declared by this speaker.")]
        [SerializeField]
        List<NpcActionBinding> actions = new List<NpcActionBinding>();

        [Tooltip("Whether the NPC may or must call an action in the player's lines (not in its follow-up after results).")]
        [SerializeField]
        NpcActionChoice actionChoice = NpcActionChoice.Auto;

        [Tooltip("The action to call when Action Choice is Named.")]
        [SerializeField]
        string actionChoiceName = "";

        [Header("Events (raised on the main thread)")]
        [Tooltip("The NPC started a reply.")]
        public UnityEvent onLineStarted = new UnityEvent();

        [Tooltip("A piece of the reply arrived (bind an NpcNarrator's Append here).")]
        public NpcTextEvent onDelta = new NpcTextEvent();

        [Tooltip("The reply finished: its text, and the structured payload as JSON (empty for free text).")]
        public NpcLineEvent onLineFinished = new NpcLineEvent();

        [Tooltip("A reply or save/load failed: the message says what went wrong.")]
        public NpcTextEvent onError = new NpcTextEvent();

        [Tooltip("The NPC called an action: its name and the arguments as JSON (before the action's own handler).")]
        public NpcActionEvent onActionCalled = new NpcActionEvent();

        readonly MainThreadQueue _mainThread = new MainThreadQueue();
        // Actions registered from code: name -> (declared action or null for the persona's, main-thread handler).
        readonly Dictionary<string, KeyValuePair<NpcServer.Api.V1.Action, Func<NpcActionCall, Task<string>>>>
            _registered = new Dictionary<string, KeyValuePair<NpcServer.Api.V1.Action, Func<NpcActionCall, Task<string>>>>();
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

        /// <summary>The NPC called an action (main thread), before the action's handler runs.</summary>
        public event Action<NpcActionCall> ActionCalled;

        /// <summary>Whether the NPC may or must call an action in the player's lines.</summary>
        public NpcActionChoice ActionChoice
        {
            get { return actionChoice; }
            set { actionChoice = value; }
        }

        /// <summary>The action to call when <see cref="ActionChoice"/> is Named.</summary>
        public string ActionChoiceName
        {
            get { return actionChoiceName; }
            set { actionChoiceName = value; }
        }

        /// <summary>The actions bound in the inspector (edit before the next line).</summary>
        public List<NpcActionBinding> ActionBindings
        {
            get { return actions; }
        }

        /// <summary>
        /// Declares an action the NPC can take in every line, added to the persona's own. <paramref name="handler"/>
        /// runs on the main thread when the NPC calls it; for <paramref name="awaitResult"/>, what it returns goes
        /// back to the NPC. <paramref name="parametersSchema"/> is a JSON object schema (empty: no arguments).
        /// Throws <see cref="ArgumentException"/> for a name the server would refuse.
        /// </summary>
        public void RegisterAction(string actionName, string description, string parametersSchema, bool awaitResult,
            Func<NpcActionCall, string> handler)
        {
            RegisterAsyncAction(actionName, description, parametersSchema, awaitResult, Async(handler));
        }

        /// <summary>
        /// <see cref="RegisterAction(string, string, string, bool, Func{NpcActionCall, string})"/> with an async
        /// handler (it starts on the main thread; the NPC waits for its task when the action awaits a result). A
        /// name of its own, so that a handler returning null is not ambiguous.
        /// </summary>
        public void RegisterAsyncAction(string actionName, string description, string parametersSchema, bool awaitResult,
            Func<NpcActionCall, Task<string>> handler)
        {
            NpcActionCall.CheckName(actionName);
            var declared = new NpcServer.Api.V1.Action
            {
                Name = actionName,
                Description = description ?? "",
                ParametersSchema = parametersSchema ?? "",
                AwaitResult = awaitResult,
            };
            _registered[actionName] = new KeyValuePair<NpcServer.Api.V1.Action, Func<NpcActionCall, Task<string>>>(
                declared, handler);
        }

        /// <summary>
        /// Runs <paramref name="handler"/> on the main thread when the NPC calls <paramref name="actionName"/>, an
        /// action its persona declares on the server (the tavern keeper's give_item). What it returns goes back when
        /// the action awaits its result.
        /// </summary>
        public void HandleAction(string actionName, Func<NpcActionCall, string> handler)
        {
            HandleAsyncAction(actionName, Async(handler));
        }

        /// <summary><see cref="HandleAction(string, Func{NpcActionCall, string})"/> with an async handler.</summary>
        public void HandleAsyncAction(string actionName, Func<NpcActionCall, Task<string>> handler)
        {
            NpcActionCall.CheckName(actionName);
            if (handler == null) throw new ArgumentNullException("handler");
            _registered[actionName] = new KeyValuePair<NpcServer.Api.V1.Action, Func<NpcActionCall, Task<string>>>(
                null, handler);
        }

        /// <summary>Forgets an action registered from code; returns whether there was one.</summary>
        public bool UnregisterAction(string actionName)
        {
            if (_conversation != null) _conversation.UnregisterAction(actionName);
            return _registered.Remove(actionName ?? "");
        }

        /// <summary>
        /// Sends the results of the calls the last line awaited (<see cref="NpcLine.AwaitsResults"/>, when an awaited
        /// action has no handler): call id to content. Returns the NPC's follow-up line; the events fire too.
        /// </summary>
        public async Task<NpcLine> SendActionResultsAsync(IDictionary<string, string> results,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            try
            {
                return await PrepareConversation().SendActionResultsAsync(results, cancellationToken);
            }
            catch (Exception e)
            {
                ReportFailure(e);
                throw;
            }
        }

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
                _conversation.ActionCalled += call => _mainThread.Post(() => RaiseActionCalled(call));
            }
            // Inspector fields may change between lines; the next line uses their current values.
            _conversation.PersonaId = personaId;
            _conversation.ConversationId = conversationId;
            _conversation.PlayerName = playerName;
            _conversation.Preset = preset;
            _conversation.MaxTokens = maxTokens;
            _conversation.ActionChoice = BuildActionChoice();
            foreach (var binding in actions)
            {
                if (binding == null || string.IsNullOrEmpty(binding.name)) continue;
                var handler = OnMainThread(BindingHandler(binding));
                if (!binding.declare)
                {
                    _conversation.HandleAction(binding.name, handler);
                    continue;
                }
                _conversation.RegisterAction(new NpcServer.Api.V1.Action
                {
                    Name = binding.name,
                    Description = binding.description ?? "",
                    ParametersSchema = binding.parametersSchema ?? "",
                    AwaitResult = binding.awaitResult,
                }, handler);
            }
            foreach (var pair in _registered)
            {
                var handler = pair.Value.Value == null ? null : OnMainThread(pair.Value.Value);
                if (pair.Value.Key != null) _conversation.RegisterAction(pair.Value.Key, handler);
                else _conversation.HandleAction(pair.Key, handler);
            }
            return _conversation;
        }

        ActionChoice BuildActionChoice()
        {
            switch (actionChoice)
            {
                case NpcActionChoice.None:
                    return new ActionChoice { Mode = NpcServer.Api.V1.ActionChoice.Types.Mode.None };
                case NpcActionChoice.Required:
                    return new ActionChoice { Mode = NpcServer.Api.V1.ActionChoice.Types.Mode.Required };
                case NpcActionChoice.Named:
                    return new ActionChoice
                    {
                        Mode = NpcServer.Api.V1.ActionChoice.Types.Mode.Named,
                        Name = actionChoiceName ?? "",
                    };
                default:
                    return null;
            }
        }

        static Func<NpcActionCall, Task<string>> Async(Func<NpcActionCall, string> handler)
        {
            if (handler == null) return null;
            return call => Task.FromResult(handler(call));
        }

        static Func<NpcActionCall, Task<string>> BindingHandler(NpcActionBinding binding)
        {
            return call =>
            {
                binding.onCalled.Invoke(call.ArgumentsJson);
                return Task.FromResult(string.IsNullOrEmpty(binding.result) ? "done" : binding.result);
            };
        }

        // The conversation calls handlers on the transport's thread; Unity objects may only be touched on the main
        // thread, so the handler starts there (in Update) and its task completes the one the conversation awaits.
        Func<NpcActionCall, Task<string>> OnMainThread(Func<NpcActionCall, Task<string>> handler)
        {
            return call =>
            {
                var done = new TaskCompletionSource<string>();
                _mainThread.Post(() => RunHandler(handler, call, done));
                return done.Task;
            };
        }

        static async void RunHandler(Func<NpcActionCall, Task<string>> handler, NpcActionCall call,
            TaskCompletionSource<string> done)
        {
            try
            {
                done.TrySetResult(await handler(call));
            }
            catch (Exception e)
            {
                Debug.LogException(e);
                done.TrySetException(e);
            }
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

        void RaiseActionCalled(NpcActionCall call)
        {
            onActionCalled.Invoke(call.Name, call.ArgumentsJson);
            var called = ActionCalled;
            if (called != null) called(call);
        }

        void RaiseLineFinished(NpcLine line)
        {
            onLineFinished.Invoke(line.Text, line.StructuredJson ?? "");
            var finished = LineFinished;
            if (finished != null) finished(line);
        }
    }
}
