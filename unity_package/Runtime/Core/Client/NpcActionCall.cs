using System.Collections.Generic;
using System.Text.RegularExpressions;
using NpcServer.Api.V1;

namespace NpcServer.Dialogue
{
    /// <summary>
    /// A call the NPC made to an action: its id, the action's name and the arguments, which the server validated
    /// against the action's schema.
    /// </summary>
    public sealed class NpcActionCall
    {
        // The server's rule for action names (a letter or '_', then letters, digits or '_'; at most 64).
        static readonly Regex NamePattern = new Regex("^[A-Za-z_][A-Za-z0-9_]{0,63}$");
        IDictionary<string, object> _arguments;

        /// <summary>Wraps the ActionCall event of a Talk stream.</summary>
        public NpcActionCall(ActionCall call)
        {
            Call = call ?? new ActionCall();
        }

        /// <summary>The call as the server sent it.</summary>
        public ActionCall Call { get; private set; }

        /// <summary>The call's id ("call_..."); an action result names it.</summary>
        public string Id
        {
            get { return Call.Id; }
        }

        /// <summary>The action's name.</summary>
        public string Name
        {
            get { return Call.Name; }
        }

        /// <summary>The call's position among the line's calls, from 0.</summary>
        public int Index
        {
            get { return Call.Index; }
        }

        /// <summary>The arguments as JSON text (a JSON object).</summary>
        public string ArgumentsJson
        {
            get { return string.IsNullOrEmpty(Call.Arguments) ? "{}" : Call.Arguments; }
        }

        /// <summary>The arguments parsed into dictionaries, lists, strings, doubles, bools and nulls.</summary>
        public IDictionary<string, object> Arguments
        {
            get
            {
                if (_arguments == null)
                {
                    _arguments = NpcJson.Parse(ArgumentsJson) as IDictionary<string, object>
                        ?? new Dictionary<string, object>();
                }
                return _arguments;
            }
        }

        /// <summary>A string argument (for example "item"), or null.</summary>
        public string GetString(string key)
        {
            object value;
            return Arguments.TryGetValue(key, out value) ? value as string : null;
        }

        /// <summary>
        /// Throws <see cref="System.ArgumentException"/> naming the rule when <paramref name="name"/> is not a
        /// valid action name.
        /// </summary>
        public static void CheckName(string name)
        {
            if (name == null || !NamePattern.IsMatch(name))
            {
                throw new System.ArgumentException("action name '" + name + "' must be a letter or '_', then "
                    + "letters, digits or '_', at most 64 characters", "name");
            }
        }
    }
}
