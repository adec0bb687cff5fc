using System.Collections.Generic;
using System.Threading.Tasks;
using NpcServer.Api.V1;

namespace NpcServer.Dialogue
{
    /// <summary>A finished NPC line: the whole text, and the structured payload when the persona has a schema.</summary>
    public sealed class NpcLine
    {
        IDictionary<string, object> _structured;

        /// <summary>Wraps the final message of a Talk stream.</summary>
        public NpcLine(CompletionFinal final)
        {
            Final = final ?? new CompletionFinal();
            Text = Final.Message != null ? Final.Message.Content : "";
            ActionResults = new Dictionary<string, string>();
        }

        /// <summary>The whole reply, the concatenation of every delta.</summary>
        public string Text { get; private set; }

        /// <summary>The final message as the server sent it (usage, timings, finish reason, ...).</summary>
        public CompletionFinal Final { get; private set; }

        /// <summary>True when a JSON response format applied to this line (the persona has a schema).</summary>
        public bool IsStructured
        {
            get { return Final.Structured != null; }
        }

        /// <summary>True only when the line parsed as JSON and matched the schema.</summary>
        public bool IsStructuredValid
        {
            get { return Final.Structured != null && Final.Structured.Valid; }
        }

        /// <summary>
        /// The structured payload as JSON text (the reply itself), or null for a free-text line or an invalid
        /// payload. Parse it with JsonUtility, Newtonsoft, or <see cref="NpcJson"/>.
        /// </summary>
        public string StructuredJson
        {
            get { return IsStructuredValid ? Text : null; }
        }

        /// <summary>Why the structured payload is not valid (empty when valid or not structured).</summary>
        public string StructuredError
        {
            get { return Final.Structured != null ? Final.Structured.Error : ""; }
        }

        /// <summary>The actions the NPC called in this line, in order.</summary>
        public IList<NpcActionCall> ActionCalls
        {
            get
            {
                var calls = new List<NpcActionCall>();
                foreach (var call in Final.ActionCalls) calls.Add(new NpcActionCall(call));
                return calls;
            }
        }

        /// <summary>
        /// True when the line ended by calling an action that awaits its result (FinishReason is Action): the
        /// result goes back with <see cref="NpcConversation.SendActionResultsAsync"/> (which SayAsync does itself
        /// when every awaited action has a handler).
        /// </summary>
        public bool AwaitsResults
        {
            get { return Final.FinishReason == FinishReason.Action; }
        }

        /// <summary>The results this line answered instead of a player line (call id to content); empty otherwise.</summary>
        public IDictionary<string, string> ActionResults { get; internal set; }

        /// <summary>
        /// The NPC's next line, spoken after the results of this line's awaited actions went back; null when there
        /// was none.
        /// </summary>
        public NpcLine FollowUp { get; internal set; }

        // The handlers started for this line's calls (call id to their task), for the results an awaited call needs.
        internal Dictionary<string, Task<string>> Handlers { get; set; }

        /// <summary>The last line of the exchange: this one, or the end of its <see cref="FollowUp"/> chain.</summary>
        public NpcLine Last
        {
            get
            {
                var line = this;
                while (line.FollowUp != null) line = line.FollowUp;
                return line;
            }
        }

        /// <summary>Why generation stopped (STOP, LENGTH when max_tokens cut the line, ACTION when it awaits results).</summary>
        public FinishReason FinishReason
        {
            get { return Final.FinishReason; }
        }

        /// <summary>How many old turns the server left out of the prompt to fit the context window.</summary>
        public int TruncatedTurns
        {
            get { return Final.TruncatedTurns; }
        }

        /// <summary>
        /// True when this is the reply the server stored for an earlier try of the same line (same request id),
        /// returned without generating again.
        /// </summary>
        public bool Replayed
        {
            get { return Final.Replayed; }
        }

        /// <summary>
        /// The structured payload parsed into dictionaries, lists, strings, doubles, bools and nulls; null when
        /// there is no valid payload or it is not a JSON object.
        /// </summary>
        public IDictionary<string, object> Structured
        {
            get
            {
                if (_structured == null && StructuredJson != null)
                {
                    _structured = NpcJson.Parse(StructuredJson) as IDictionary<string, object>;
                }
                return _structured;
            }
        }

        /// <summary>A string field of the structured payload (for example "line" or "emotion"), or null.</summary>
        public string GetStructuredString(string key)
        {
            var structured = Structured;
            object value;
            if (structured == null || !structured.TryGetValue(key, out value)) return null;
            return value as string;
        }
    }
}
